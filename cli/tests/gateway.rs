//! End-to-end: the org gateways of a real devnet (CometBFT + app + `neurodata-gateway` processes
//! on loopback, started by `ndctl devnet up --gateways`), called over mTLS by the Rust client
//! library, through every bad path the gateway must refuse clearly.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::DevnetDir;
use neurodata_abci::query;
use neurodata_certs::{OrgCa, Role, Validity};
use neurodata_client::gateway::{GatewayClient, GatewayConnectError, GatewayTls};
use neurodata_client::{Amount, ClientError, Signer, TxParams, msg, submit};
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const BASE_PORT: u16 = 27700;
/// The devnet's gateways refuse blobs above this (set through the environment they inherit).
const MAX_BLOB: usize = 8 << 20;
/// ... and store at most this much per member: above one largest blob, so that an oversize
/// upload is refused as such, below the two uploads of the scenario's provider.
const MEMBER_QUOTA: usize = 9_000_000;

/// `ndctl` with the blob limit and upload quota the gateways it starts should use.
fn ndctl(dir: &Path, args: &[&str]) -> Result<String, String> {
    common::ndctl_env(
        dir,
        args,
        &[
            ("NEURODATA_GATEWAY_MAX_BLOB_BYTES", MAX_BLOB.to_string()),
            (
                "NEURODATA_GATEWAY_UPLOAD_QUOTA_MEMBER_BYTES",
                MEMBER_QUOTA.to_string(),
            ),
        ],
    )
}

struct Net {
    dir: DevnetDir,
    spec: serde_json::Value,
}

impl Net {
    fn up() -> Net {
        let dir = DevnetDir::new("ndgw");
        let out = ndctl(
            dir.path(),
            &[
                "devnet",
                "up",
                "--validators",
                "1",
                "--gateways",
                "--base-port",
                &BASE_PORT.to_string(),
            ],
        )
        .unwrap_or_else(|e| panic!("devnet up failed: {e}"));
        assert!(out.contains("gateway of medlab"), "{out}");
        let spec = serde_json::from_slice(&std::fs::read(dir.path().join("devnet.json")).unwrap())
            .unwrap();
        Net { dir, spec }
    }

    fn url(&self) -> String {
        self.spec["nodes"][0]["gateway"]["url"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn org_dir(&self, org: &str) -> PathBuf {
        self.dir.path().join("consortium").join(org)
    }

    fn tls(&self, org: &str, role: &str) -> GatewayTls {
        let o = self.org_dir(org);
        GatewayTls::from_files(
            &self.org_dir("medlab").join("ca.pem"),
            &o.join(format!("{role}.pem")),
            &o.join(format!("{role}.key")),
        )
        .unwrap()
    }

    async fn client(&self, org: &str, role: &str) -> GatewayClient {
        GatewayClient::connect(&self.url(), Some(self.tls(org, role)))
            .await
            .unwrap()
    }

    fn signer(&self, org: &str, role: &str) -> Signer {
        Signer::load(&self.org_dir(org), role).unwrap()
    }
}

fn gateway_code(e: &ClientError) -> String {
    match e {
        ClientError::Gateway { code, .. } => code.clone(),
        other => format!("not a gateway status: {other}"),
    }
}

/// A raw channel that trusts the gateway but presents no client certificate.
async fn anonymous(net: &Net) -> tonic::transport::Channel {
    let ca = std::fs::read(net.org_dir("medlab").join("ca.pem")).unwrap();
    Endpoint::from_shared(net.url())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[test]
fn gateway_serves_members_over_mtls_and_refuses_everything_else() {
    let net = Net::up();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario(&net));
}

async fn scenario(net: &Net) {
    // The caller is recognised from its certificate, for any admitted org.
    let provider = net.client("medlab", "provider").await;
    let st = provider.status().await.unwrap();
    assert_eq!(st.chain_id, "neurodata-devnet");
    assert_eq!(
        (st.member_org.as_str(), st.member_role.as_str()),
        ("medlab", "provider")
    );
    assert!(st.height >= 1);
    let buyer = net.client("healthtech", "buyer").await;
    assert_eq!(buyer.status().await.unwrap().member_org, "healthtech");

    // Events from now on, filtered to transfers into the provider's account.
    let provider_addr = net.signer("medlab", "provider").address();
    let mut events = provider
        .subscribe(gw::SubscribeRequest {
            types: vec!["nrc.transfer".into()],
            attributes: [("to".to_owned(), provider_addr.to_string())].into(),
            from_height: 0,
        })
        .await
        .unwrap();

    // A transfer through the gateway, committed, and read back with a verified proof.
    let buyer_signer = net.signer("healthtech", "buyer");
    let light = common::light(net.dir.path());
    let before = common::account(&light, &provider, provider_addr).await;
    let committed = submit(
        &buyer,
        &buyer_signer,
        Amount(1),
        vec![msg::transfer(provider_addr, Amount(25))],
    )
    .await
    .unwrap();
    let (height, hash) = (committed.height, committed.hash);
    let after = common::account(&light, &provider, provider_addr).await;
    let (b, a): (u128, u128) = (
        before.balance.parse().unwrap(),
        after.balance.parse().unwrap(),
    );
    assert_eq!(a, b + 25);
    let ev = tokio::time::timeout(Duration::from_secs(20), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((ev.height, ev.tx_hash.as_str()), (height, hash.as_str()));
    // Resumable: a new subscription from that height replays the same event.
    let mut replay = provider
        .subscribe(gw::SubscribeRequest {
            types: vec!["nrc.transfer".into()],
            attributes: [("to".to_owned(), provider_addr.to_string())].into(),
            from_height: height,
        })
        .await
        .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(20), replay.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.tx_hash, hash);

    // Proofs are checked by the client: a verified org read.
    let v = light
        .read(&buyer, &query::org("medlab".into()).query, 0)
        .await
        .unwrap();
    assert!(v.value.is_some());

    // A tx refused by CheckTx: its code and log come back (nonce 0 was already used).
    let chain_id = st.chain_id.clone();
    let replayed = buyer_signer
        .sign(
            TxParams {
                chain_id: chain_id.clone(),
                nonce: 0,
                fee: Amount(1),
                attach_certificate: false,
                memo: String::new(),
            },
            vec![msg::transfer(provider_addr, Amount(1))],
        )
        .unwrap();
    match buyer
        .broadcast_mode(replayed, gw::BroadcastMode::Sync, 0)
        .await
    {
        Err(ClientError::Rejected { codespace, log, .. }) => {
            assert_eq!(codespace, "tx");
            assert!(log.contains("nonce"), "{log}");
        }
        other => panic!("replay accepted: {other:?}"),
    }

    // An oversize message is refused before it reaches the chain.
    let err = buyer
        .broadcast_mode(vec![7u8; 5 << 20], gw::BroadcastMode::Sync, 0)
        .await
        .unwrap_err();
    assert!(
        ["OutOfRange", "ResourceExhausted"].contains(&gateway_code(&err).as_str()),
        "{err}"
    );

    // No client certificate: a clear UNAUTHENTICATED, while health checks need none.
    let channel = anonymous(net).await;
    let s = gw::status_client::StatusClient::new(channel.clone())
        .get(gw::StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    assert!(
        s.message().contains("no client certificate"),
        "{}",
        s.message()
    );
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "neurodata.gateway.v1.Tx".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // The plain-text health listener (for Kubernetes' gRPC probe): the same status, and nothing
    // but health is served there.
    let health_addr = net.spec["nodes"][0]["gateway"]["health"]
        .as_str()
        .unwrap()
        .to_owned();
    let plain = Endpoint::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let plain_health = tonic_health::pb::health_client::HealthClient::new(plain.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "neurodata.gateway.v1.Tx".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain_health.status, health.status);
    let s = gw::status_client::StatusClient::new(plain)
        .get(gw::StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unimplemented, "{s}");

    // Server reflection lists the gateway's services (what grpcurl needs), without a certificate.
    use tonic_reflection::pb::v1 as refl;
    let mut reflection = refl::server_reflection_client::ServerReflectionClient::new(channel);
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![refl::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                refl::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        }]))
        .await
        .unwrap()
        .into_inner();
    let listed = answers.message().await.unwrap().unwrap();
    let Some(refl::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("no service list: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for svc in ["Tx", "Query", "Events", "Blobs", "Status"] {
        assert!(
            names.contains(&format!("neurodata.gateway.v1.{svc}")),
            "{names:?}"
        );
    }

    // A certificate from a CA the consortium never admitted.
    let rogue_dir = net.dir.path().join("rogue");
    let rogue = OrgCa::create("rogue", "Rogue", Validity::days_from(now(), 10)).unwrap();
    rogue
        .issue("mallory", Role::Buyer, Validity::days_from(now(), 5))
        .unwrap()
        .save(&rogue_dir, "mallory")
        .unwrap();
    let mallory = GatewayClient::connect(
        &net.url(),
        Some(
            GatewayTls::from_files(
                &net.org_dir("medlab").join("ca.pem"),
                &rogue_dir.join("mallory.pem"),
                &rogue_dir.join("mallory.key"),
            )
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    let err = mallory.status().await.unwrap_err();
    assert_eq!(gateway_code(&err), "Unauthenticated", "{err}");
    assert!(
        err.to_string().contains("not the CA of any admitted org"),
        "{err}"
    );

    // A member who points ndctl at the gateway wrongly is told what is wrong and the fix.
    connection_mistakes_are_told_in_one_line(net).await;

    // Blobs: round trip, CID checked; the wrong role, unknown and malformed CIDs, oversize.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (cid, size) = provider
        .upload(std::io::Cursor::new(data.clone()))
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    // A blob no dataset lists is readable by the gateway's own org only (the marketplace's
    // rules for listed datasets are tested in market.rs).
    let colleague = net.client("medlab", "buyer").await;
    let mut back = Vec::new();
    colleague.download(&cid, &mut back).await.unwrap();
    assert_eq!(back, data);
    let err = buyer.download(&cid, &mut Vec::new()).await.unwrap_err();
    assert_eq!(gateway_code(&err), "PermissionDenied", "{err}");
    let err = buyer
        .upload(std::io::Cursor::new(b"a buyer's file".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "PermissionDenied", "{err}");
    let unknown = neurodata_client::cid::Cid::from_digest([9u8; 32]).to_string();
    let err = colleague
        .download(&unknown, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "NotFound", "{err}");
    let err = colleague
        .download("bafyNOTACID", &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "InvalidArgument", "{err}");
    let admin = net.client("medlab", "admin").await;
    let err = admin
        .upload(std::io::Cursor::new(vec![1u8; MAX_BLOB + 1]))
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "ResourceExhausted", "{err}");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    // Bytes that do not match the CID the client announced are refused, nothing stored.
    let mut blobs =
        gw::blobs_client::BlobsClient::new(endpoint_channel(net, "medlab", "provider").await);
    let wrong = neurodata_client::cid::Cid::of(b"other bytes").to_string();
    let s = blobs
        .upload(tokio_stream::iter(vec![gw::UploadChunk {
            data: b"these bytes".to_vec(),
            expected_cid: wrong.clone(),
        }]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{}", s.message());
    let err = colleague
        .download(&wrong, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "NotFound", "{err}");

    // Uploads are stored for the gateway's own org only, and within each member's quota: the
    // provider's 3 MB blob plus 6.5 MB more is over the 9 MB the gateway was started with.
    let outsider = net.client("datacorp", "provider").await;
    let err = outsider
        .upload(std::io::Cursor::new(b"datacorp's file".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "PermissionDenied", "{err}");
    assert!(
        err.to_string().contains("uploads of org medlab only"),
        "{err}"
    );
    let over = data.len() + 3_500_000;
    assert!(data.len() + over > MEMBER_QUOTA && over <= MAX_BLOB);
    let err = provider
        .upload(std::io::Cursor::new(vec![3u8; over]))
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "ResourceExhausted", "{err}");
    assert!(
        err.to_string().contains("upload_quota_member_bytes"),
        "{err}"
    );

    // Another org lists medlab's unlisted blob (the chain cannot tell whose bytes they are):
    // that does not make it downloadable from medlab's gateway to the org that listed it.
    let dc_signer = net.signer("datacorp", "provider");
    submit(
        &outsider,
        &dc_signer,
        Amount(1),
        vec![msg::register_dataset(pb::RegisterDataset {
            cid: cid.clone(),
            plaintext_sha256: vec![1; 32],
            key_commitment: vec![2; 32],
            size: size - 1,
            ciphertext_size: size,
            rows: 1,
            schema: Some(pb::Schema {
                columns: vec![pb::Column {
                    name: "x".into(),
                    r#type: pb::ColumnType::Int as i32,
                }],
            }),
            price: "1".into(),
            license: "x".into(),
            title: "medlab's bytes, listed by datacorp".into(),
            location: String::new(),
            ..Default::default()
        })],
    )
    .await
    .unwrap();
    let err = outsider.download(&cid, &mut Vec::new()).await.unwrap_err();
    assert_eq!(gateway_code(&err), "PermissionDenied", "{err}");
    // Only medlab's own listing of a CID opens it on medlab's gateway; datacorp's opens nothing.
    assert!(err.to_string().contains("is not a listed dataset"), "{err}");
    // medlab's own members still read what medlab stored.
    colleague.download(&cid, &mut Vec::new()).await.unwrap();

    // A certificate revoked while its stream is open: the stream ends with PERMISSION_DENIED and
    // the next call is refused.
    let medlab_ca = OrgCa::load(&net.org_dir("medlab")).unwrap();
    medlab_ca
        .issue("intern", Role::Buyer, Validity::days_from(now(), 5))
        .unwrap()
        .save(&net.org_dir("medlab"), "intern")
        .unwrap();
    let intern = net.client("medlab", "intern").await;
    let mut intern_events = intern
        .subscribe(gw::SubscribeRequest::default())
        .await
        .unwrap();
    let intern_cert = net.signer("medlab", "intern");
    let admin = net.signer("medlab", "admin");
    submit(
        &provider,
        &admin,
        Amount(1),
        vec![msg::revoke(
            intern_cert.address(),
            Some(intern_cert.certificate_der().to_vec()),
            "left the lab",
        )],
    )
    .await
    .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match intern_events.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(s) => return Some(s),
            }
        }
    })
    .await
    .expect("stream still open 30 s after the revocation");
    let s = closed.expect("stream ended without a status");
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{}", s.message());
    assert!(s.message().contains("revoked"), "{}", s.message());
    let err = intern.status().await.unwrap_err();
    assert_eq!(gateway_code(&err), "PermissionDenied", "{err}");

    // Another language: a Python grpcio client signs its own tx, broadcasts it and verifies the
    // proof of the result itself.
    python_interop(net, &provider_addr.to_string());

    // Metrics count the calls.
    let metrics = net.spec["nodes"][0]["gateway"]["metrics"].as_str().unwrap();
    let body = http_get(metrics).await;
    assert!(
        body.contains(
            "neurodata_gateway_grpc_calls_total{method=\"/neurodata.gateway.v1.Tx/Broadcast\""
        ),
        "{body}"
    );

    // CometBFT goes away: calls fail with UNAVAILABLE, the gateway stays up and recovers.
    let pids: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.dir.path().join("pids.json")).unwrap()).unwrap();
    let comet = pids["nodes"][0][1].as_u64().unwrap();
    Command::new("kill")
        .arg("-KILL")
        .arg(comet.to_string())
        .status()
        .unwrap();
    let mut err = None;
    for _ in 0..40 {
        match buyer.status().await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("status still answered 10 s after CometBFT was killed");
    assert_eq!(gateway_code(&err), "Unavailable", "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    ndctl(net.dir.path(), &["devnet", "up"]).unwrap();
    let mut recovered = false;
    for _ in 0..60 {
        if buyer.status().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        recovered,
        "gateway did not recover after CometBFT came back"
    );
    submit(
        &buyer,
        &buyer_signer,
        Amount(1),
        vec![msg::transfer(provider_addr, Amount(1))],
    )
    .await
    .unwrap();

    // The logs the devnet writes to files carry no terminal colour codes.
    for log in ["gateway.log", "abci.log"] {
        let text = std::fs::read(net.dir.path().join("node0").join(log)).unwrap();
        assert!(!text.is_empty(), "{log} is empty");
        assert!(
            !text.windows(2).any(|w| w == b"\x1b["),
            "{log} has ANSI escape sequences: {}",
            String::from_utf8_lossy(&text[..text.len().min(400)])
        );
    }
}

/// `ndctl query orgs --gateway URL ARGS` fails with `error: EXPECTED`, one line, in the user's
/// terms.
fn assert_mistake(net: &Net, url: &str, args: &[&str], expected: &str) {
    let mut all = vec!["query", "orgs", "--gateway", url];
    all.extend_from_slice(args);
    let out = ndctl(net.dir.path(), &all).expect_err("a wrong gateway connection succeeded");
    let line = out.trim_end();
    for noise in [
        "\n",
        "transport error",
        "Location:",
        "tcp connect error",
        "UnknownIssuer",
    ] {
        assert!(!line.contains(noise), "{noise:?} in {out:?}");
    }
    assert!(
        line == format!("error: {expected}"),
        "ndctl said {line:?}, expected \"error: {expected}\""
    );
}

async fn connection_mistakes_are_told_in_one_line(net: &Net) {
    let url = net.url();
    let plain = url.replacen("https://", "http://", 1);
    let rpc = net.spec["nodes"][0]["rpc"].as_str().unwrap().to_owned();
    let rpc_tls = rpc.replacen("http://", "https://", 1);
    let closed = "https://127.0.0.1:1";
    let file = |org: &str, name: &str| net.org_dir(org).join(name).display().to_string();
    let (medlab_ca, datacorp_ca) = (file("medlab", "ca.pem"), file("datacorp", "ca.pem"));
    let (cert, key, other_key) = (
        file("medlab", "provider.pem"),
        file("medlab", "provider.key"),
        file("medlab", "buyer.key"),
    );
    let member = ["--gateway-ca", &medlab_ca, "--cert", &cert, "--key", &key];

    assert_mistake(
        net,
        &plain,
        &[],
        &format!("the gateway at {plain} speaks TLS: use {url}"),
    );
    assert_mistake(
        net,
        &rpc,
        &[],
        &format!("{rpc} does not answer gRPC: is this the gateway's port (not the node's RPC)?"),
    );
    assert_mistake(
        net,
        &rpc_tls,
        &member,
        &format!("{rpc_tls} does not answer TLS: is this the gateway's port (not the node's RPC)?"),
    );
    assert_mistake(
        net,
        closed,
        &member,
        &format!(
            "cannot reach the gateway at {closed} (connection refused): is it running, and is \
             this its port?"
        ),
    );
    assert_mistake(
        net,
        &url,
        &["--gateway-ca", &datacorp_ca, "--cert", &cert, "--key", &key],
        &format!(
            "the gateway at {url} presents a certificate issued by medlab CA, not by the CA \
             given (datacorp CA): pass the root CA of the gateway's org (--gateway-ca)"
        ),
    );
    assert_mistake(
        net,
        &url,
        &[
            "--gateway-ca",
            &medlab_ca,
            "--cert",
            &cert,
            "--key",
            &other_key,
        ],
        &format!("the key in {other_key} is not the key of certificate {cert}"),
    );

    // A name the gateway's certificate does not carry.
    let mut tls = net.tls("medlab", "provider");
    tls.domain = Some("elsewhere.example".into());
    let err = GatewayClient::connect(&url, Some(tls)).await.err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "the certificate of the gateway at {url} is not issued for elsewhere.example: use a \
             host name or address its certificate names"
        )
    );

    // The library refuses a key that is not the certificate's before connecting, also when it
    // is given PEM rather than files.
    let mut tls = net.tls("medlab", "provider");
    tls.key_pem = std::fs::read(&other_key).unwrap();
    let err = GatewayClient::connect(&url, Some(tls)).await.err().unwrap();
    assert!(
        matches!(
            err,
            ClientError::GatewayConnect(GatewayConnectError::KeyMismatch { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("the member key is not the key of the member certificate"),
        "{err}"
    );
}

fn python_interop(net: &Net, to_hex: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = Command::new(root.join("scripts/python-env.sh"))
        .output()
        .expect("run scripts/python-env.sh");
    assert!(
        env.status.success(),
        "python env: {}",
        String::from_utf8_lossy(&env.stderr)
    );
    let python = String::from_utf8_lossy(&env.stdout).trim().to_owned();
    let o = net.org_dir("datacorp");
    let out = Command::new(python)
        .arg(root.join("gateway/interop/python_client.py"))
        .arg("--gateway")
        .arg(net.url().trim_start_matches("https://"))
        .arg("--ca")
        .arg(net.org_dir("medlab").join("ca.pem"))
        .arg("--cert")
        .arg(o.join("trainer.pem"))
        .arg("--key")
        .arg(o.join("trainer.key"))
        .arg("--to")
        .arg(to_hex)
        .arg("--proto-dir")
        .arg(root.join("proto/proto"))
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Python client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["member"], "trainer@datacorp");
    assert_eq!(report["proof_verified"], true);
    assert!(
        report["replay_refused"]
            .as_str()
            .unwrap()
            .starts_with("tx ")
    );
}

async fn endpoint_channel(net: &Net, org: &str, role: &str) -> tonic::transport::Channel {
    let o = net.org_dir(org);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(net.org_dir("medlab").join("ca.pem")).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(o.join(format!("{role}.pem"))).unwrap(),
            std::fs::read(o.join(format!("{role}.key"))).unwrap(),
        ));
    Endpoint::from_shared(net.url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
