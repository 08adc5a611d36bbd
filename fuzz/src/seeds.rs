//! Each target's seed inputs: valid encodings of what it reads, so the fuzzer starts past the
//! first checks. The targets' doc comments give their input layouts.

use neurodata_certs::{OrgCa, Role, Validity};
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;
use pb::message::Action;

use crate::{CHAIN_ID, MODELS, NOW, Target, ca, encode, member, model_bytes, rows, sign_tx};

type Seeds = Vec<(String, Vec<u8>)>;

fn msg(action: Action) -> pb::Message {
    pb::Message {
        action: Some(action),
    }
}

/// One message of (nearly) every kind, with fields that pass the stateless checks.
fn messages(new_certificate: Vec<u8>) -> Vec<(&'static str, pb::Message)> {
    let to = vec![7u8; 32];
    vec![
        (
            "transfer",
            msg(Action::Transfer(pb::Transfer {
                to: to.clone(),
                amount: "1000".into(),
            })),
        ),
        (
            "vote",
            msg(Action::Vote(pb::Vote {
                proposal_id: 1,
                approve: true,
            })),
        ),
        (
            "buy",
            msg(Action::BuyDataset(pb::BuyDataset {
                dataset_id: 3,
                max_price: "50".into(),
            })),
        ),
        (
            "update_price",
            msg(Action::UpdateDatasetPrice(pb::UpdateDatasetPrice {
                dataset_id: 3,
                price: "60".into(),
            })),
        ),
        (
            "delist",
            msg(Action::DelistDataset(pb::DelistDataset { dataset_id: 3 })),
        ),
        (
            "confirm",
            msg(Action::ConfirmAccess(pb::ConfirmAccess { purchase_id: 2 })),
        ),
        (
            "refund",
            msg(Action::RefundPurchase(pb::RefundPurchase { purchase_id: 2 })),
        ),
        (
            "request_validation",
            msg(Action::RequestValidation(pb::RequestValidation {
                dataset_id: 3,
                model_listing_id: 0,
            })),
        ),
        (
            "deliver_key",
            msg(Action::DeliverKey(pb::DeliverKey {
                purchase_id: 2,
                wrapped_key: vec![4; 125],
                recipient: to.clone(),
            })),
        ),
        (
            "register_worker",
            msg(Action::RegisterWorker(pb::RegisterWorker {
                capacity: 2,
                location: "eu".into(),
            })),
        ),
        (
            "accept_job",
            msg(Action::AcceptJob(pb::AcceptJob { job_id: 9 })),
        ),
        (
            "cancel_job",
            msg(Action::CancelJob(pb::CancelJob { job_id: 9 })),
        ),
        (
            "request_preview",
            msg(Action::RequestPreview(pb::RequestPreview { dataset_id: 3 })),
        ),
        (
            "request_evaluation",
            msg(Action::RequestEvaluation(pb::RequestEvaluation {
                model_version: 4,
                dataset_id: 3,
            })),
        ),
        (
            "buy_model",
            msg(Action::BuyModel(pb::BuyModel {
                listing_id: 5,
                max_price: "70".into(),
            })),
        ),
        (
            "revoke",
            msg(Action::RevokeCertificate(pb::RevokeCertificate {
                fingerprint: to.clone(),
                certificate: vec![],
                reason: "key lost".into(),
            })),
        ),
        (
            "move_identity",
            msg(Action::MoveIdentity(pb::MoveIdentity {
                from: to.clone(),
                to: vec![8; 32],
                to_certificate: vec![],
                reason: "left".into(),
                from_certificate: vec![],
            })),
        ),
        (
            "renew",
            msg(Action::RenewCertificate(pb::RenewCertificate {
                new_certificate,
            })),
        ),
    ]
}

/// Signed txs of the fixture CA's buyer: one per message kind, the first with its certificate
/// attached, one of several messages.
pub fn tx_decode() -> Seeds {
    let buyer = member(Role::Buyer);
    let cert = buyer.cert.to_der().expect("DER");
    let renewed = member(Role::Buyer).cert.to_der().expect("DER");
    let body = |nonce: u64, attach: bool, messages: Vec<pb::Message>| pb::TxBody {
        chain_id: CHAIN_ID.into(),
        signer: crate::sha256(&cert).to_vec(),
        nonce,
        fee: "10".into(),
        certificate: if attach { cert.clone() } else { vec![] },
        memo: if nonce % 3 == 0 { "seed".into() } else { String::new() },
        messages,
    };
    let all = messages(renewed);
    let mut seeds: Seeds = all
        .iter()
        .enumerate()
        .map(|(i, (name, m))| {
            let tx = sign_tx(&body(i as u64, i == 0, vec![m.clone()]), &buyer.key);
            (format!("{name}.tx"), tx)
        })
        .collect();
    let several: Vec<pb::Message> = all.iter().take(4).map(|(_, m)| m.clone()).collect();
    seeds.push((
        "several.tx".into(),
        sign_tx(&body(99, true, several), &buyer.key),
    ));
    seeds
}

/// The fixture CA, a member certificate of each role, certificates outside their validity, of
/// another CA, and a CA's.
pub fn certificate() -> Seeds {
    let der = |c: &openssl::x509::X509| c.to_der().expect("DER");
    let mut seeds: Seeds = vec![("ca.der".into(), der(&ca().cert))];
    for role in Role::ALL {
        seeds.push((format!("{role}.der"), der(&member(role).cert)));
    }
    let at = |not_before: i64, not_after: i64| Validity {
        not_before,
        not_after,
    };
    for (name, validity) in [
        ("expired", at(NOW - 86_400 * 30, NOW - 1)),
        ("not_yet_valid", at(NOW + 1, NOW + 86_400)),
        ("exactly_now", at(NOW, NOW)),
    ] {
        let m = ca()
            .issue("edge@fuzzlab", Role::Trainer, validity)
            .expect("issue");
        seeds.push((format!("{name}.der"), der(&m.cert)));
    }
    let other = OrgCa::create("other", "Other", Validity::days_from(NOW, 30)).expect("CA");
    seeds.push(("other_ca.der".into(), der(&other.cert)));
    let stranger = other
        .issue("stranger@other", Role::Admin, Validity::days_from(NOW, 30))
        .expect("issue");
    seeds.push(("other_member.der".into(), der(&stranger.cert)));
    seeds
}

/// One request of each kind the gateway decodes (the first byte picks the message type: see
/// the target).
pub fn gateway_request() -> Seeds {
    use neurodata_abci::query;
    let tx = tx_decode().remove(0).1;
    let listing_tx = {
        let provider = member(Role::Provider);
        let cert = provider.cert.to_der().expect("DER");
        let register = pb::RegisterDataset {
            cid: neurodata_crypto::cid::Cid::of(b"ciphertext").to_string(),
            ciphertext_size: 10,
            ..Default::default()
        };
        let body = pb::TxBody {
            chain_id: CHAIN_ID.into(),
            signer: crate::sha256(&cert).to_vec(),
            nonce: 0,
            fee: "10".into(),
            certificate: cert,
            memo: String::new(),
            messages: vec![msg(Action::RegisterDataset(register))],
        };
        sign_tx(&body, &provider.key)
    };
    let csv = rows(4, 7, Target::TwoClasses);
    let jsonl = "{\"age\":50,\"sex\":\"M\",\"cp\":\"typical\",\"chol\":200.5}\n\
                 {\"age\":61,\"sex\":\"F\",\"cp\":\"asymptomatic\",\"chol\":181}\n";
    let cid = neurodata_crypto::cid::Cid::of(b"blob").to_string();
    let mut seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "broadcast",
            0,
            encode(&gw::BroadcastRequest {
                tx: tx.clone(),
                mode: gw::BroadcastMode::Commit as i32,
                timeout_ms: 5000,
            }),
        ),
        (
            "broadcast_listing",
            0,
            encode(&gw::BroadcastRequest {
                tx: listing_tx,
                mode: 0,
                timeout_ms: 0,
            }),
        ),
        (
            "address",
            4,
            encode(&gw::AddressQuery {
                address: vec![3; 32],
                height: 5,
                prove: true,
            }),
        ),
        (
            "org",
            5,
            encode(&gw::OrgQuery {
                org_id: "fuzzlab".into(),
                height: 0,
                prove: true,
            }),
        ),
        (
            "subscribe",
            11,
            encode(&gw::SubscribeRequest {
                types: vec!["nrc.transfer".into()],
                attributes: [("to".to_owned(), "ab".to_owned())].into_iter().collect(),
                from_height: 3,
            }),
        ),
        (
            "upload",
            12,
            encode(&gw::UploadChunk {
                data: b"chunk".to_vec(),
                expected_cid: cid.clone(),
            }),
        ),
        ("download", 13, encode(&gw::DownloadRequest { cid: cid.clone() })),
        (
            "deposit",
            14,
            encode(&gw::DepositKeyRequest {
                key: vec![1; 32],
                cid,
            }),
        ),
        (
            "install",
            15,
            encode(&gw::InstallModelRequest {
                listing_id: 2,
                key: vec![2; 32],
            }),
        ),
        (
            "predict_csv",
            16,
            encode(&gw::PredictRequest {
                listing_id: 1,
                format: pb::DataFormat::Csv as i32,
                rows: csv.into_bytes(),
            }),
        ),
        (
            "predict_jsonl",
            16,
            encode(&gw::PredictRequest {
                listing_id: 1,
                format: pb::DataFormat::JsonLines as i32,
                rows: jsonl.as_bytes().to_vec(),
            }),
        ),
    ];
    for (i, q) in [
        query::org("fuzzlab".into()).query,
        query::proposal(7).query,
        query::params().query,
        query::dataset(3).query,
        query::orgs().query,
        query::store("a/b".into()).query,
        query::leaderboard(2).query,
    ]
    .into_iter()
    .enumerate()
    {
        let read = gw::ReadRequest {
            path: q.path().into(),
            data: q.data(),
            height: i as u64,
            prove: i % 2 == 0,
        };
        seeds.push((["read0", "read1", "read2", "read3", "read4", "read5", "read6"][i], 1, encode(&read)));
    }
    seeds
        .into_iter()
        .map(|(name, which, bytes)| {
            let mut input = vec![which];
            input.extend(bytes);
            (format!("{name}.bin"), input)
        })
        .collect()
}

/// CSV, JSON lines and JSON arrays of the fixture rows and of quoting edge cases. Layout:
/// format byte, read-size byte, file.
pub fn tabular() -> Seeds {
    let heart = rows(6, 3, Target::ThreeClasses);
    let files: [(&str, u8, &str); 8] = [
        ("heart.csv", 0, &heart),
        ("quoted.csv", 0, "name,note\r\n\"Smith, J\",\"said \"\"hi\"\"\"\n  2 ,\"two\nlines\"\r3,x"),
        ("blank_lines.csv", 0, "\n \r\na,b\n\n1,2\n\t\n3,4\n\n"),
        ("numbers.csv", 0, "i,f,b,c\n1,1.5,true,x\n-2,1e3,false,y\n3,NaN,true,x\n"),
        ("rows.jsonl", 1, "{\"b\":\" x \",\"a\":1.5,\"c\":true}\r\n\n{\"a\":null,\"b\":\"y\",\"c\":false}\n"),
        ("array.json", 2, "\n [\n  {\"b\": \"x\",\n   \"a\": 1.5},\n  {\"a\": null, \"b\": \"y, ]}\"}\r\n]\n"),
        ("unicode.jsonl", 1, "{\"n\\u00e9\":\"\\u00a0caf\\u00e9\",\"k\":\"a\\\"b\"}\n"),
        ("header_only.csv", 0, "a,b\n"),
    ];
    files
        .iter()
        .flat_map(|(name, format, text)| {
            [1u8, 7, 255].into_iter().map(move |read| {
                let mut input = vec![*format, read];
                input.extend_from_slice(text.as_bytes());
                (format!("{read}-{name}"), input)
            })
        })
        .collect()
}

/// The fixture model files and a small tensor file with metadata and both dtypes.
pub fn safetensors() -> Seeds {
    let mut seeds: Seeds = MODELS
        .iter()
        .map(|(name, _, _)| (format!("{name}.safetensors"), model_bytes(name).to_vec()))
        .collect();
    let mut f = neurodata_trainer::tensors::TensorFile::default();
    f.metadata.insert("kind".into(), "checkpoint".into());
    f.metadata.insert("step".into(), "3".into());
    f.put_f32("w", vec![2, 2], vec![1.0, -2.5, 0.0, 3.25]);
    f.put_i32("n", vec![3], vec![-1, 0, 7]);
    f.put_f32("empty", vec![0], vec![]);
    seeds.push(("small.safetensors".into(), f.to_bytes()));
    seeds
}

/// Plaintexts around chunk boundaries, untampered and with each kind of tampering. Layout: see
/// the target.
pub fn stream_decrypt() -> Seeds {
    let mut seeds = Seeds::new();
    let plain = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 31 % 251) as u8).collect() };
    for (i, n) in [0usize, 1, 1023, 1024, 1025, 3000].into_iter().enumerate() {
        // chunk 1024, key byte, split 700, no ops.
        let mut input = vec![0, i as u8, 188, 2, 0];
        input.extend(plain(n));
        seeds.push((format!("plain-{n}.bin"), input));
    }
    for kind in 0u8..10 {
        // chunk 1024, key 9, split 4096, one op.
        let mut input = vec![0, 9, 0, 16, 1, kind, 40, 0, 1, 0];
        input.extend(plain(2500));
        seeds.push((format!("op-{kind}.bin"), input));
    }
    seeds
}

/// For each fixture model, inputs of a few rows (layout: see the target).
pub fn onnx_roundtrip() -> Seeds {
    let mut seeds = Seeds::new();
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    for (m, (name, _, _)) in MODELS.iter().enumerate() {
        for k in 0..3u8 {
            let mut input = vec![m as u8, k * 2];
            input.extend((0..600).map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 56) as u8
            }));
            seeds.push((format!("{name}-{k}.bin"), input));
        }
    }
    seeds
}
