//! `ndctl devnet`: a local consortium network on loopback — one CometBFT v0.38 node and one
//! `neurodata-abci` per validator, with the dev consortium's certificates and a shared genesis.
//!
//! Layout of the devnet directory:
//! - `devnet.json`: chain id, binaries and each node's ports, id and validator key;
//! - `pids.json`: the processes `up` started (what `down` stops, and nothing else);
//! - `consortium/`: the dev consortium (`certs/`), `node<i>/`: CometBFT home, `app/` (RocksDB),
//!   `abci.sock`, `cometbft.log`, `abci.log`, `verdicts/` (the inbox of the validator's verifier,
//!   read by its app to extend votes); with `--gateways`, node *i* < 3 also runs the gRPC
//!   gateway of org *i* (`gateway.toml`, `gateway.log`, `blobs/`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use neurodata_abci::genesis::{Allocation, AppState, GenesisOrg, GenesisParams, GenesisValidator};
use neurodata_abci::governance::Params;
use neurodata_certs::{DEV_ORGS, Role};
use neurodata_client::{ChainAccess as _, NodeClient};
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt as _;

/// NRC each dev member starts with.
pub const DEV_BALANCE: &str = "1000000";

/// Devnet commands.
#[derive(Subcommand)]
pub enum DevnetCommand {
    /// Creates (or resumes) the network and starts every node not running; waits for blocks.
    Up {
        /// Validators of a new network.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Devnet directory.
        #[arg(long, env = "NEURODATA_DEVNET", default_value = "./devnet")]
        dir: PathBuf,
        /// First port; node i uses base+10i+6 (p2p) and base+10i+7 (RPC).
        #[arg(long, default_value_t = 26600)]
        base_port: u16,
        /// The cometbft binary (default: built by scripts/build-cometbft.sh).
        #[arg(long, env = "NEURODATA_COMETBFT")]
        cometbft: Option<PathBuf>,
        /// The neurodata-abci binary (default: next to ndctl). Given when resuming, it replaces
        /// the devnet's (a new build after a scheduled upgrade stopped the nodes).
        #[arg(long, env = "NEURODATA_ABCI_BIN")]
        abci: Option<PathBuf>,
        /// Only start node(s) with this index (repeat); default all.
        #[arg(long = "only", value_name = "INDEX")]
        nodes: Vec<usize>,
        /// Run CometBFT's built-in app (`kvstore`) instead of NeuroData, for baselines.
        #[arg(long)]
        builtin_app: Option<String>,
        /// Also run each founding org's gRPC gateway (mTLS) next to node 0, 1, 2.
        #[arg(long)]
        gateways: bool,
        /// The neurodata-gateway binary (default: next to ndctl).
        #[arg(long, env = "NEURODATA_GATEWAY_BIN")]
        gateway_bin: Option<PathBuf>,
        /// Also run training (needs --gateways): datacorp's worker (its `trainer` member, next to
        /// node 2) and a verifier beside every validator (its org's `validator` member), which
        /// re-runs sampled segments of results and feeds its app's verdict inbox.
        #[arg(long, requires = "gateways")]
        training: bool,
    },
    /// Stops the processes `up` started (by pid).
    Down {
        /// Devnet directory.
        #[arg(long, env = "NEURODATA_DEVNET", default_value = "./devnet")]
        dir: PathBuf,
        /// Only stop node(s) with this index (repeat); default all.
        #[arg(long = "only", value_name = "INDEX")]
        nodes: Vec<usize>,
    },
    /// Adds a full node (not a validator) that syncs the chain; prints its validator key.
    AddNode {
        /// Devnet directory.
        #[arg(long, env = "NEURODATA_DEVNET", default_value = "./devnet")]
        dir: PathBuf,
        /// Join by state sync: restore the newest snapshot the validators' apps offer (they take
        /// them every `NEURODATA_SNAPSHOT_INTERVAL` heights), verified by a light client that
        /// trusts node0's header of 100 heights back, instead of replaying every block from
        /// genesis.
        #[arg(long)]
        state_sync: bool,
    },
    /// Height and app hash of every node.
    Status {
        /// Devnet directory.
        #[arg(long, env = "NEURODATA_DEVNET", default_value = "./devnet")]
        dir: PathBuf,
    },
}

/// One node of the devnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Index.
    pub index: usize,
    /// CometBFT RPC URL.
    pub rpc: String,
    /// P2P port.
    pub p2p_port: u16,
    /// CometBFT node id.
    pub node_id: String,
    /// Validator Ed25519 key, base64.
    pub validator_key: String,
    /// Whether it is in the genesis validator set.
    pub genesis_validator: bool,
    /// The org gateway next to this node, if any.
    #[serde(default)]
    pub gateway: Option<GatewaySpec>,
}

/// An org gateway of the devnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewaySpec {
    /// The org it serves.
    pub org: String,
    /// gRPC URL (mTLS).
    pub url: String,
    /// Prometheus endpoint.
    pub metrics: String,
    /// Plain-text gRPC health service (host:port; what a Kubernetes probe would use).
    #[serde(default)]
    pub health: String,
}

/// The devnet description in `devnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Devnet {
    /// Chain id.
    pub chain_id: String,
    /// cometbft binary.
    pub cometbft: PathBuf,
    /// neurodata-abci binary.
    pub abci: PathBuf,
    /// First port.
    pub base_port: u16,
    /// Nodes.
    pub nodes: Vec<NodeSpec>,
    /// Run CometBFT's built-in app of this name (e.g. `kvstore`) instead of ours: the baseline
    /// for benchmarks on the same network shape.
    #[serde(default)]
    pub builtin_app: Option<String>,
    /// The neurodata-gateway binary, when the devnet runs gateways.
    #[serde(default)]
    pub gateway_bin: Option<PathBuf>,
    /// The neurodata-worker and trainer binaries, when the devnet runs training.
    #[serde(default)]
    pub training: Option<TrainingBins>,
}

/// The binaries of the devnet's workers and verifiers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingBins {
    /// neurodata-worker.
    pub worker: PathBuf,
    /// trainer.
    pub trainer: PathBuf,
}

/// The org whose `trainer` member runs the devnet's worker.
pub const WORKER_ORG: &str = "datacorp";

/// Processes of one node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Pids {
    nodes: Vec<(usize, u32, u32)>,
    #[serde(default)]
    gateways: Vec<(usize, u32)>,
    /// Worker (beside the node of its org's gateway) and verifiers (beside their validator).
    #[serde(default)]
    workers: Vec<(usize, u32)>,
    #[serde(default)]
    verifiers: Vec<(usize, u32)>,
}

fn node_home(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node{i}"))
}

/// The devnet's genesis file: the trust root of verified reads.
pub fn genesis_path(dir: &Path) -> PathBuf {
    node_home(dir, 0).join("config/genesis.json")
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn default_cometbft() -> anyhow::Result<PathBuf> {
    // The binary is built from the Go module pinned in tools/ by the project's script.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-cometbft.sh");
    Ok(PathBuf::from(run(&mut Command::new(script))?))
}

fn sibling_binary(name: &str, package: &str, flag: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name(name);
    if sibling.exists() {
        return Ok(sibling);
    }
    bail!(
        "{name} not found next to {}: build it (cargo build -p {package}) or pass {flag}",
        exe.display()
    )
}

fn default_abci() -> anyhow::Result<PathBuf> {
    sibling_binary("neurodata-abci", "neurodata-abci", "--abci")
}

impl Devnet {
    /// Loads `devnet.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Devnet> {
        let p = dir.join("devnet.json");
        serde_json::from_slice(
            &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not a devnet description", p.display()))
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("devnet.json"), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

fn init_node(devnet: &Devnet, dir: &Path, i: usize) -> anyhow::Result<NodeSpec> {
    let home = node_home(dir, i);
    run(Command::new(&devnet.cometbft)
        .arg("init")
        .arg("--home")
        .arg(&home))?;
    let node_id = run(Command::new(&devnet.cometbft)
        .arg("show-node-id")
        .arg("--home")
        .arg(&home))?;
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("config/priv_validator_key.json"))?)?;
    let validator_key = key["pub_key"]["value"]
        .as_str()
        .context("priv_validator_key.json has no pub_key.value")?
        .to_owned();
    let base = devnet.base_port + 10 * i as u16;
    Ok(NodeSpec {
        index: i,
        rpc: format!("http://127.0.0.1:{}", base + 7),
        p2p_port: base + 6,
        node_id,
        validator_key,
        genesis_validator: false,
        gateway: None,
    })
}

fn configure_node(devnet: &Devnet, dir: &Path, node: &NodeSpec) -> anyhow::Result<()> {
    let home = node_home(dir, node.index).canonicalize()?;
    let socket = home.join("abci.sock");
    if socket.as_os_str().len() > 100 {
        bail!(
            "{} is too long for a Unix socket path: use a shorter --dir",
            socket.display()
        );
    }
    let path = home.join("config/config.toml");
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(&path)?.parse()?;
    doc["moniker"] = toml_edit::value(format!("node{}", node.index));
    doc["proxy_app"] = toml_edit::value(format!("unix://{}", socket.display()));
    doc["rpc"]["laddr"] = toml_edit::value(node.rpc.replace("http://", "tcp://"));
    doc["p2p"]["laddr"] = toml_edit::value(format!("tcp://127.0.0.1:{}", node.p2p_port));
    let peers: Vec<String> = devnet
        .nodes
        .iter()
        .filter(|n| n.index != node.index)
        .map(|n| format!("{}@127.0.0.1:{}", n.node_id, n.p2p_port))
        .collect();
    doc["p2p"]["persistent_peers"] = toml_edit::value(peers.join(","));
    doc["p2p"]["addr_book_strict"] = toml_edit::value(false);
    doc["p2p"]["allow_duplicate_ip"] = toml_edit::value(true);
    // Loopback peers reconnect fast after a restart.
    doc["p2p"]["persistent_peers_max_dial_period"] = toml_edit::value("2s");
    doc["consensus"]["timeout_commit"] = toml_edit::value("800ms");
    // CometBFT's own metrics (block interval, ABCI call timings, mempool size) next to the
    // node's RPC port, for the soak's report and for an operator watching the devnet.
    doc["instrumentation"]["prometheus"] = toml_edit::value(true);
    doc["instrumentation"]["prometheus_listen_addr"] =
        toml_edit::value(format!("127.0.0.1:{}", node.p2p_port - 2));
    std::fs::write(&path, doc.to_string())?;
    Ok(())
}

/// Turns on state sync in `node`'s CometBFT config: snapshots found on its peers are verified
/// by a light client that trusts node0's header 100 heights back (or the first), cross-checked
/// against node1's RPC.
async fn configure_state_sync(devnet: &Devnet, dir: &Path, node: &NodeSpec) -> anyhow::Result<u64> {
    let servers: Vec<&NodeSpec> = devnet
        .nodes
        .iter()
        .filter(|n| n.genesis_validator)
        .take(2)
        .collect();
    let [first, _] = servers[..] else {
        bail!("state sync needs two running validators' RPCs to verify against");
    };
    let client = NodeClient::new(&first.rpc)?;
    // A header below the newest snapshots, so the light client verifies forward from it.
    let height = client.latest_height().await?.saturating_sub(100).max(1);
    let commit =
        tendermint_rpc::Client::commit(client.rpc(), tendermint::block::Height::try_from(height)?)
            .await
            .with_context(|| format!("reading node{}'s header at {height}", first.index))?;
    let path = node_home(dir, node.index).join("config/config.toml");
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(&path)?.parse()?;
    doc["statesync"]["enable"] = toml_edit::value(true);
    doc["statesync"]["rpc_servers"] = toml_edit::value(
        servers
            .iter()
            .map(|n| n.rpc.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    doc["statesync"]["trust_height"] = toml_edit::value(i64::try_from(height)?);
    doc["statesync"]["trust_hash"] =
        toml_edit::value(commit.signed_header.header.hash().to_string());
    doc["statesync"]["trust_period"] = toml_edit::value("168h0m0s");
    // Loopback peers answer at once: CometBFT's default waits 15 s for snapshot offers.
    doc["statesync"]["discovery_time"] = toml_edit::value("5s");
    std::fs::write(&path, doc.to_string())?;
    Ok(height)
}

fn write_genesis(devnet: &Devnet, dir: &Path) -> anyhow::Result<()> {
    let consortium = dir.join("consortium");
    neurodata_certs::dev_consortium(&consortium, crate::now())?;
    let mut orgs = Vec::new();
    let mut allocations = Vec::new();
    for (org_id, name) in DEV_ORGS {
        let org_dir = consortium.join(org_id);
        orgs.push(GenesisOrg::from_ca_file(
            org_id,
            name,
            &org_dir.join("ca.pem"),
        )?);
        for role in Role::ALL {
            let cert = openssl::x509::X509::from_pem(&std::fs::read(
                org_dir.join(format!("{role}.pem")),
            )?)?;
            allocations.push(Allocation {
                address: hex::encode(neurodata_certs::fingerprint(&cert)?),
                amount: DEV_BALANCE.into(),
            });
        }
    }
    // Each validator is operated by its org's `validator` member (validation rights come from
    // this registration, not from the certificate's OU).
    let validators: Vec<GenesisValidator> = devnet
        .nodes
        .iter()
        .filter(|n| n.genesis_validator)
        .map(|n| {
            let org_id = DEV_ORGS[n.index % DEV_ORGS.len()].0;
            let operator = openssl::x509::X509::from_pem(&std::fs::read(
                consortium.join(org_id).join("validator.pem"),
            )?)?;
            Ok(GenesisValidator {
                name: format!("node{}", n.index),
                org_id: org_id.into(),
                pub_key: n.validator_key.clone(),
                power: 10,
                operators: vec![hex::encode(neurodata_certs::fingerprint(&operator)?)],
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let params = Params {
        min_fee: neurodata_client::Amount(1),
        proposal_voting_blocks: 500,
        ..Params::default()
    };
    let app_state = AppState {
        orgs,
        validators: validators.clone(),
        allocations,
        params: Some(GenesisParams::from(&params)),
    };
    let template = node_home(dir, 0).join("config/genesis.json");
    let mut genesis: serde_json::Value = serde_json::from_slice(&std::fs::read(&template)?)?;
    genesis["chain_id"] = devnet.chain_id.clone().into();
    genesis["initial_height"] = "1".into();
    // Validators attest training results in their precommits' vote extensions from the first
    // block on (CometBFT v0.38 `ABCIParams.VoteExtensionsEnableHeight`).
    genesis["consensus_params"]["abci"]["vote_extensions_enable_height"] = "1".into();
    genesis["validators"] = validators
        .iter()
        .zip(devnet.nodes.iter().filter(|n| n.genesis_validator))
        .map(|(v, n)| {
            let key: serde_json::Value = serde_json::from_slice(&std::fs::read(
                node_home(dir, n.index).join("config/priv_validator_key.json"),
            )?)?;
            Ok(serde_json::json!({
                "address": key["address"],
                "pub_key": key["pub_key"],
                "power": v.power.to_string(),
                "name": v.name,
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?
        .into();
    app_state.put_into(&mut genesis)?;
    let bytes = serde_json::to_vec_pretty(&genesis)?;
    for n in &devnet.nodes {
        std::fs::write(node_home(dir, n.index).join("config/genesis.json"), &bytes)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one call site, each argument a named flag
fn create(
    dir: &Path,
    validators: usize,
    base_port: u16,
    cometbft: PathBuf,
    abci: PathBuf,
    builtin_app: Option<String>,
    gateway_bin: Option<PathBuf>,
    training: Option<TrainingBins>,
) -> anyhow::Result<Devnet> {
    if validators == 0 {
        bail!("a devnet needs at least one validator");
    }
    std::fs::create_dir_all(dir)?;
    let mut devnet = Devnet {
        chain_id: "neurodata-devnet".into(),
        cometbft,
        abci,
        base_port,
        nodes: vec![],
        builtin_app,
        gateway_bin,
        training,
    };
    for i in 0..validators {
        let mut node = init_node(&devnet, dir, i)?;
        node.genesis_validator = true;
        if let Some((org, _)) = DEV_ORGS.get(i).filter(|_| devnet.gateway_bin.is_some()) {
            let base = base_port + 10 * i as u16;
            node.gateway = Some(GatewaySpec {
                org: (*org).into(),
                url: format!("https://127.0.0.1:{}", base + 8),
                metrics: format!("http://127.0.0.1:{}/metrics", base + 9),
                health: format!("127.0.0.1:{}", base + 5),
            });
        }
        devnet.nodes.push(node);
    }
    write_genesis(&devnet, dir)?;
    for n in &devnet.nodes {
        configure_node(&devnet, dir, n)?;
        if let Some(g) = &n.gateway {
            configure_gateway(dir, n, g)?;
        }
    }
    devnet.save(dir)?;
    Ok(devnet)
}

fn configure_gateway(dir: &Path, node: &NodeSpec, g: &GatewaySpec) -> anyhow::Result<()> {
    let home = node_home(dir, node.index).canonicalize()?;
    let certs = dir.join("consortium").join(&g.org).canonicalize()?;
    let base = |url: &str| {
        url.rsplit_once("//")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    // The org's provider signs key deliveries; the keystore passphrase is a random file only
    // this user can read (a real deployment mounts it from a secret).
    let pass_file = home.join("keystore.pass");
    if !pass_file.exists() {
        let mut pass = [0u8; 24];
        openssl::rand::rand_bytes(&mut pass)?;
        std::fs::write(&pass_file, hex::encode(pass))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&pass_file, std::fs::Permissions::from_mode(0o600))?;
    }
    let config = format!(
        "# the {org} gateway of the devnet, next to node{i}\n\
         listen = {listen:?}\nmetrics_listen = {metrics:?}\n{health}node_rpc = {rpc:?}\n\
         tls_cert = {cert:?}\ntls_key = {key:?}\nblob_dir = {blobs:?}\n\
         org_id = {org:?}\nkeystore_dir = {keystore:?}\nkeystore_passphrase_file = {pass:?}\n\
         delivery_cert = {dcert:?}\ndelivery_key = {dkey:?}\n",
        keystore = home.join("keystore"),
        pass = pass_file,
        dcert = certs.join("provider.pem"),
        dkey = certs.join("provider.key"),
        org = g.org,
        i = node.index,
        listen = base(&g.url),
        metrics = base(&g.metrics),
        health = if g.health.is_empty() {
            String::new()
        } else {
            format!("health_listen = {:?}\n", g.health)
        },
        rpc = node.rpc,
        cert = certs.join("gateway.pem"),
        key = certs.join("gateway.key"),
        blobs = home.join("blobs"),
    );
    std::fs::write(home.join("gateway.toml"), config)?;
    Ok(())
}

fn start_gateway(
    devnet: &Devnet,
    dir: &Path,
    node: &NodeSpec,
    pids: &mut Pids,
) -> anyhow::Result<()> {
    let (Some(bin), Some(g)) = (&devnet.gateway_bin, &node.gateway) else {
        return Ok(());
    };
    let i = node.index;
    let pid = pids
        .gateways
        .iter()
        .find(|(n, _)| *n == i)
        .map(|(_, p)| *p)
        .unwrap_or(0);
    if alive(pid, bin) {
        return Ok(());
    }
    let home = node_home(dir, i).canonicalize()?;
    let mut child = spawn_logged(
        Command::new(bin)
            .arg("--config")
            .arg(home.join("gateway.toml"))
            .env("RUST_LOG", "info,h2=warn,hyper=warn"),
        &home.join("gateway.log"),
    )?;
    let addr = g
        .url
        .trim_start_matches("https://")
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("gateway url {}", g.url))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            bail!(
                "the {} gateway of node{i} did not start; see {}",
                g.org,
                home.join("gateway.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pids.gateways.retain(|(n, _)| *n != i);
    pids.gateways.push((i, child.id()));
    pids.gateways.sort();
    Ok(())
}

/// The gateway URL serving `org`, if the devnet runs one.
fn gateway_of<'a>(devnet: &'a Devnet, org: &str) -> Option<&'a GatewaySpec> {
    devnet
        .nodes
        .iter()
        .filter_map(|n| n.gateway.as_ref())
        .find(|g| g.org == org)
}

/// Starts a training process (worker or verifier) unless the one recorded still runs.
fn start_training_process(
    bin: &Path,
    pid: Option<u32>,
    args: &[std::ffi::OsString],
    log: &Path,
) -> anyhow::Result<Option<u32>> {
    if pid.is_some_and(|p| alive(p, bin)) {
        return Ok(None);
    }
    let child = spawn_logged(
        Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info,h2=warn,hyper=warn,tower=warn"),
        log,
    )?;
    Ok(Some(child.id()))
}

/// With training: the worker beside the worker org's gateway, and a verifier beside each
/// validator, operated by its org's `validator` member through its org's gateway.
fn start_training(
    devnet: &Devnet,
    dir: &Path,
    node: &NodeSpec,
    pids: &mut Pids,
) -> anyhow::Result<()> {
    let Some(bins) = &devnet.training else {
        return Ok(());
    };
    let i = node.index;
    let home = node_home(dir, i).canonicalize()?;
    let certs = dir.join("consortium").canonicalize()?;
    let member = |org: &str, role: &str, gw: &GatewaySpec| -> Vec<std::ffi::OsString> {
        let o = certs.join(org);
        vec![
            "--gateway".into(),
            gw.url.clone().into(),
            "--ca".into(),
            o.join("ca.pem").into(),
            "--cert".into(),
            o.join(format!("{role}.pem")).into(),
            "--key".into(),
            o.join(format!("{role}.key")).into(),
            "--trainer".into(),
            bins.trainer.clone().into(),
        ]
    };
    if let Some(gw) = node.gateway.as_ref().filter(|g| g.org == WORKER_ORG) {
        let mut args: Vec<std::ffi::OsString> = vec!["train".into()];
        args.extend(member(WORKER_ORG, "trainer", gw));
        args.extend([
            "--state".into(),
            home.join("worker").into_os_string(),
            "--capacity".into(),
            "2".into(),
        ]);
        let old = pids.workers.iter().find(|(n, _)| *n == i).map(|(_, p)| *p);
        if let Some(pid) =
            start_training_process(&bins.worker, old, &args, &home.join("worker.log"))?
        {
            pids.workers.retain(|(n, _)| *n != i);
            pids.workers.push((i, pid));
        }
    }
    if node.genesis_validator {
        let org = DEV_ORGS[i % DEV_ORGS.len()].0;
        let Some(gw) = gateway_of(devnet, org) else {
            return Ok(());
        };
        let mut args: Vec<std::ffi::OsString> = vec!["verify".into()];
        args.extend(member(org, "validator", gw));
        args.extend([
            "--validator-key".into(),
            home.join("config/priv_validator_key.json").into_os_string(),
            "--verdicts".into(),
            home.join("verdicts").into_os_string(),
            "--state".into(),
            home.join("verifier").into_os_string(),
        ]);
        let old = pids
            .verifiers
            .iter()
            .find(|(n, _)| *n == i)
            .map(|(_, p)| *p);
        if let Some(pid) =
            start_training_process(&bins.worker, old, &args, &home.join("verifier.log"))?
        {
            pids.verifiers.retain(|(n, _)| *n != i);
            pids.verifiers.push((i, pid));
        }
    }
    Ok(())
}

fn kill_and_wait(pid: u32, bin: &Path) {
    if !alive(pid, bin) {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid, bin) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid, bin) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

fn alive(pid: u32, binary: &Path) -> bool {
    // A pid is ours only if it still runs the binary we started (pids are recycled).
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(&name)
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            // The state follows the parenthesised command name, which may contain spaces.
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
}

fn load_pids(dir: &Path) -> Pids {
    std::fs::read(dir.join("pids.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_pids(dir: &Path, pids: &Pids) -> anyhow::Result<()> {
    std::fs::write(dir.join("pids.json"), serde_json::to_vec_pretty(pids)?)?;
    Ok(())
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<std::process::Child> {
    let out = File::options().create(true).append(true).open(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Own process group: the network outlives this command and a Ctrl-C in its terminal.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(child)
}

fn start_node(devnet: &Devnet, dir: &Path, i: usize, pids: &mut Pids) -> anyhow::Result<()> {
    let home = node_home(dir, i).canonicalize()?;
    let entry = pids.nodes.iter().find(|(n, ..)| *n == i).copied();
    let (mut comet_pid, mut abci_pid) = entry.map(|(_, c, a)| (c, a)).unwrap_or((0, 0));
    if devnet.builtin_app.is_none() && !alive(abci_pid, &devnet.abci) {
        let socket = home.join("abci.sock");
        let _ = std::fs::remove_file(&socket);
        // The verdict inbox the validator's verifier writes into.
        let verdicts = home.join("verdicts");
        std::fs::create_dir_all(&verdicts)?;
        let mut child = spawn_logged(
            Command::new(&devnet.abci)
                .arg("--home")
                .arg(home.join("app"))
                .arg("--listen")
                .arg(format!("unix://{}", socket.display()))
                .arg("--validator-key")
                .arg(home.join("config/priv_validator_key.json"))
                .arg("--verdicts")
                .arg(&verdicts)
                .env("NEURODATA_LOG", "info"),
            &home.join("abci.log"),
        )?;
        abci_pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                bail!(
                    "neurodata-abci of node{i} did not start; see {}",
                    home.join("abci.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if !alive(comet_pid, &devnet.cometbft) {
        let mut cmd = Command::new(&devnet.cometbft);
        cmd.arg("start").arg("--home").arg(&home);
        if let Some(app) = &devnet.builtin_app {
            cmd.arg(format!("--proxy_app={app}"));
        }
        comet_pid = spawn_logged(&mut cmd, &home.join("cometbft.log"))?.id();
    }
    pids.nodes.retain(|(n, ..)| *n != i);
    pids.nodes.push((i, comet_pid, abci_pid));
    pids.nodes.sort();
    Ok(())
}

async fn wait_for_blocks(
    devnet: &Devnet,
    nodes: &[usize],
    min_height: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for n in devnet.nodes.iter().filter(|n| nodes.contains(&n.index)) {
        let client = NodeClient::new(&n.rpc)?;
        loop {
            match client.latest_height().await {
                Ok(h) if h >= min_height => break,
                _ if Instant::now() > deadline => {
                    bail!(
                        "node{} did not reach height {min_height} in {timeout:?}",
                        n.index
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    Ok(())
}

fn stop(dir: &Path, devnet: &Devnet, only: &[usize]) -> anyhow::Result<Vec<usize>> {
    let mut pids = load_pids(dir);
    let mut stopped = Vec::new();
    let selected = |i: usize| only.is_empty() || only.contains(&i);
    if let Some(bins) = &devnet.training {
        for (_, pid) in pids
            .workers
            .iter()
            .chain(&pids.verifiers)
            .filter(|(i, _)| selected(*i))
        {
            kill_and_wait(*pid, &bins.worker);
        }
    }
    pids.workers.retain(|(i, _)| !selected(*i));
    pids.verifiers.retain(|(i, _)| !selected(*i));
    if let Some(bin) = &devnet.gateway_bin {
        for (_, pid) in pids.gateways.iter().filter(|(i, _)| selected(*i)) {
            kill_and_wait(*pid, bin);
        }
    }
    // CometBFT first, so it does not see its app vanish under it.
    for (i, comet, abci) in pids.nodes.iter().filter(|(i, ..)| selected(*i)) {
        for (pid, bin) in [(*comet, &devnet.cometbft), (*abci, &devnet.abci)] {
            kill_and_wait(pid, bin);
        }
        stopped.push(*i);
    }
    pids.nodes.retain(|(i, ..)| !selected(*i));
    pids.gateways.retain(|(i, _)| !selected(*i));
    save_pids(dir, &pids)?;
    Ok(stopped)
}

/// Runs a devnet command.
pub async fn run_command(cmd: DevnetCommand) -> anyhow::Result<()> {
    match cmd {
        DevnetCommand::Up {
            validators,
            dir,
            base_port,
            cometbft,
            abci,
            nodes,
            builtin_app,
            gateways,
            gateway_bin,
            training,
        } => {
            let devnet = if dir.join("devnet.json").exists() {
                println!("resuming the devnet in {}", dir.display());
                let mut devnet = Devnet::load(&dir)?;
                // A new app build (an upgrade): the nodes started from here on run it.
                if let Some(a) = abci.filter(|a| *a != devnet.abci) {
                    println!("app binary now {}", a.display());
                    devnet.abci = a;
                    devnet.save(&dir)?;
                }
                devnet
            } else {
                let cometbft = match cometbft {
                    Some(c) => c,
                    None => default_cometbft()?,
                };
                let abci = match abci {
                    Some(a) => a,
                    None => default_abci()?,
                };
                println!(
                    "creating a {validators}-validator devnet in {}",
                    dir.display()
                );
                let gateway_bin = match (gateways, gateway_bin) {
                    (false, _) => None,
                    (true, Some(g)) => Some(g),
                    (true, None) => Some(sibling_binary(
                        "neurodata-gateway",
                        "neurodata-gateway",
                        "--gateway-bin",
                    )?),
                };
                let training = match training {
                    false => None,
                    true => Some(TrainingBins {
                        worker: sibling_binary(
                            "neurodata-worker",
                            "neurodata-worker",
                            "(nothing: build it)",
                        )?,
                        trainer: sibling_binary(
                            "trainer",
                            "neurodata-trainer",
                            "(nothing: build it)",
                        )?,
                    }),
                };
                create(
                    &dir,
                    validators,
                    base_port,
                    cometbft,
                    abci,
                    builtin_app,
                    gateway_bin,
                    training,
                )?
            };
            let selected: Vec<usize> = if nodes.is_empty() {
                devnet.nodes.iter().map(|n| n.index).collect()
            } else {
                nodes
            };
            let mut pids = load_pids(&dir);
            for &i in &selected {
                start_node(&devnet, &dir, i, &mut pids)?;
            }
            save_pids(&dir, &pids)?;
            wait_for_blocks(&devnet, &selected, 2, Duration::from_secs(120)).await?;
            for n in devnet.nodes.iter().filter(|n| selected.contains(&n.index)) {
                start_gateway(&devnet, &dir, n, &mut pids)?;
            }
            save_pids(&dir, &pids)?;
            for n in devnet.nodes.iter().filter(|n| selected.contains(&n.index)) {
                start_training(&devnet, &dir, n, &mut pids)?;
            }
            save_pids(&dir, &pids)?;
            println!("chain {} is producing blocks", devnet.chain_id);
            for n in devnet.nodes.iter().filter(|n| selected.contains(&n.index)) {
                println!(
                    "  node{}  rpc {}  p2p 127.0.0.1:{}  logs {}",
                    n.index,
                    n.rpc,
                    n.p2p_port,
                    node_home(&dir, n.index).display()
                );
                if let Some(g) = &n.gateway {
                    println!(
                        "         gateway of {} {} (mTLS, server CA consortium/{}/ca.pem)  metrics {}",
                        g.org, g.url, g.org, g.metrics
                    );
                }
            }
            println!("  certificates in {}", dir.join("consortium").display());
            let first = devnet
                .nodes
                .first()
                .map(|n| n.rpc.clone())
                .unwrap_or_default();
            println!(
                "to reach it with ndctl:\n  export NEURODATA_NODE={first} NEURODATA_GENESIS={}",
                genesis_path(&dir).display()
            );
        }
        DevnetCommand::Down { dir, nodes } => {
            let devnet = Devnet::load(&dir)?;
            let stopped = stop(&dir, &devnet, &nodes)?;
            println!("stopped node(s) {stopped:?}");
        }
        DevnetCommand::AddNode { dir, state_sync } => {
            let mut devnet = Devnet::load(&dir)?;
            let i = devnet.nodes.len();
            let node = init_node(&devnet, &dir, i)?;
            std::fs::copy(
                node_home(&dir, 0).join("config/genesis.json"),
                node_home(&dir, i).join("config/genesis.json"),
            )?;
            devnet.nodes.push(node.clone());
            configure_node(&devnet, &dir, &node)?;
            if state_sync {
                let trusted = configure_state_sync(&devnet, &dir, &node).await?;
                println!(
                    "node{i} joins by state sync, trusting node0's header at height {trusted}"
                );
            }
            devnet.save(&dir)?;
            println!(
                "added node{i} (validator key {}); start it with: ndctl devnet up --dir {} --only {i}",
                node.validator_key,
                dir.display()
            );
        }
        DevnetCommand::Status { dir } => {
            let devnet = Devnet::load(&dir)?;
            for n in &devnet.nodes {
                let node = NodeClient::new(&n.rpc)?;
                match tendermint_rpc::Client::status(node.rpc()).await {
                    Ok(s) => println!(
                        "node{}  height {}  app hash {}",
                        n.index, s.sync_info.latest_block_height, s.sync_info.latest_app_hash
                    ),
                    Err(e) => {
                        println!("node{}  down ({})", n.index, neurodata_client::one_line(&e))
                    }
                }
            }
        }
    }
    Ok(())
}
