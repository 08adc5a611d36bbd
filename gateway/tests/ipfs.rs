//! The blob store's IPFS backend against real kubo nodes (the `ipfs` binary built from
//! tools/kubo by scripts/build-kubo.sh; `NEURODATA_KUBO` names it): each node has its own repo,
//! listens on loopback only and knows no public bootstrap peers. The single-node tests run the
//! node `--offline`; the two-node test connects a second node to the first and reads through it.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use neurodata_gateway::Cid;
use neurodata_gateway::blobstore::{BlobError, BlobStore, IPFS_INDEX_FILE, IpfsSettings};
use neurodata_gateway::service::blobs::blob_status;

/// The kubo binary, built once per test process; None (with the reason printed) only if it
/// cannot be built here.
fn kubo_binary() -> Option<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BINARY.get_or_init(|| {
        if let Ok(path) = std::env::var("NEURODATA_KUBO") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "NEURODATA_KUBO={} is not a file",
                path.display()
            );
            return Ok(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-kubo.sh");
        match Command::new(&script).stderr(Stdio::inherit()).output() {
            Ok(out) if out.status.success() => Ok(PathBuf::from(
                String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            )),
            Ok(out) => Err(format!("{} exited with {}", script.display(), out.status)),
            Err(e) => Err(format!("{}: {e}", script.display())),
        }
    });
    match found {
        Ok(path) => Some(path.clone()),
        Err(why) => {
            eprintln!("SKIPPED: the kubo (IPFS) binary cannot be built here: {why}");
            None
        }
    }
}

/// A kubo daemon with its own repo; killed on drop.
struct Kubo {
    bin: PathBuf,
    repo: PathBuf,
    child: Child,
    api: String,
    _dir: tempfile::TempDir,
}

impl Drop for Kubo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kubo {
    /// Runs `ipfs ARGS` against this repo (through the daemon's API when it runs); stdout.
    fn ipfs(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
        ipfs(&self.bin, &self.repo, args, stdin)
    }

    fn start(bin: &Path, online: bool) -> Kubo {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let run = |args: &[&str]| {
            ipfs(bin, &repo, args, None).unwrap_or_else(|e| panic!("ipfs {args:?}: {e}"));
        };
        run(&["init", "--profile=test"]);
        // Loopback only, ports chosen by the OS (the daemon writes the API's into `repo/api`),
        // no public bootstrap peers, no local discovery, no autoconf fetch from the internet.
        run(&["config", "Addresses.API", "/ip4/127.0.0.1/tcp/0"]);
        run(&["config", "Addresses.Gateway", "/ip4/127.0.0.1/tcp/0"]);
        run(&[
            "config",
            "--json",
            "Addresses.Swarm",
            r#"["/ip4/127.0.0.1/tcp/0"]"#,
        ]);
        run(&["config", "--json", "Bootstrap", "[]"]);
        run(&["config", "--json", "Discovery.MDNS.Enabled", "false"]);
        run(&["config", "--json", "AutoConf.Enabled", "false"]);
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.env("IPFS_PATH", &repo).arg("daemon");
        if online {
            // No DHT: the second node finds the content by asking the peer it is connected to.
            cmd.arg("--routing=none");
        } else {
            cmd.arg("--offline");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut node = Kubo {
            bin: bin.to_owned(),
            repo,
            child,
            api: String::new(),
            _dir: dir,
        };
        node.api = node.wait_for_api();
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Polls (bounded) until the daemon answers on the API address it wrote.
    fn wait_for_api(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("kubo exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "kubo API not up in 60 s:\n{}",
                self.log()
            );
            let addr = std::fs::read_to_string(self.repo.join("api")).unwrap_or_default();
            // `/ip4/127.0.0.1/tcp/PORT`
            if let Some(port) = addr.trim().strip_prefix("/ip4/127.0.0.1/tcp/")
                && std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok()
                && self.ipfs(&["id"], None).is_ok()
            {
                return format!("http://127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Roots pinned recursively.
    fn pins(&self) -> BTreeSet<String> {
        self.ipfs(&["pin", "ls", "--type=recursive", "--quiet"], None)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Adds bytes directly (not through the gateway), unpinned; returns the root.
    fn add(&self, data: &[u8]) -> String {
        self.ipfs(
            &[
                "add",
                "--quieter",
                "--cid-version=1",
                "--raw-leaves",
                "--pin=false",
            ],
            Some(data),
        )
        .unwrap()
        .trim()
        .to_owned()
    }

    fn store(&self, state_dir: &Path, max_bytes: u64) -> BlobStore {
        BlobStore::open_ipfs(
            &IpfsSettings {
                api: self.api.clone(),
                state_dir: state_dir.to_owned(),
            },
            max_bytes,
        )
        .unwrap()
    }
}

fn ipfs(bin: &Path, repo: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = Command::new(bin)
        .env("IPFS_PATH", repo)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipfs_backend_passes_the_blob_store_suite() {
    let Some(bin) = kubo_binary() else { return };
    let node = Kubo::start(&bin, false);
    let state = tempfile::tempdir().unwrap();
    let store = node.store(state.path(), 32 << 20);
    common::blob_store_suite(&store).await;

    // The mapping is durable: a gateway restarted on the same state directory serves the blob.
    let data = common::large_blob();
    let restarted = node.store(state.path(), 32 << 20);
    assert!(common::get(&restarted, &Cid::of(&data)).await.unwrap() == data);
    // A large blob is a UnixFS DAG in kubo, so its root is not our CID.
    let root = restarted.ipfs_root(&Cid::of(&data)).await.unwrap();
    assert!(root.starts_with("bafybei"), "root {root}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipfs_pins_on_upload_and_unpins_on_remove() {
    let Some(bin) = kubo_binary() else { return };
    let node = Kubo::start(&bin, false);
    let state = tempfile::tempdir().unwrap();
    let store = node.store(state.path(), 32 << 20);
    let before = node.pins();

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let (cid, _) = common::put(&store, &data, 1 << 20).await.unwrap();
    let root = store.ipfs_root(&cid).await.unwrap();
    assert!(node.pins().contains(&root), "upload did not pin {root}");

    // Refused and abandoned uploads pin nothing.
    let mut up = store.begin().await.unwrap();
    up.write(&data[..2_000_000]).await.unwrap();
    assert!(matches!(
        up.finish(Some(Cid::of(b"not these bytes"))).await,
        Err(BlobError::Mismatch { .. })
    ));
    let mut up = store.begin().await.unwrap();
    up.write(&data[1..2_500_000]).await.unwrap();
    drop(up);
    // A later upload completes after them on the node, so their adds had their chance to pin.
    let (small, _) = common::put(&store, b"a small blob", 5).await.unwrap();
    let small_root = store.ipfs_root(&small).await.unwrap();
    let expected: BTreeSet<String> = before
        .iter()
        .cloned()
        .chain([root.clone(), small_root.clone()])
        .collect();
    assert_eq!(node.pins(), expected, "pins other than the two blobs'");

    assert!(store.remove(&cid).await.unwrap());
    assert!(!node.pins().contains(&root), "remove did not unpin {root}");
    assert!(
        node.pins().contains(&small_root),
        "remove unpinned another blob"
    );
    // The index no longer names the removed blob.
    let index = std::fs::read_to_string(state.path().join(IPFS_INDEX_FILE)).unwrap();
    assert!(!index.contains(&cid.to_string()), "{index}");
    assert!(index.contains(&small.to_string()), "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipfs_node_returning_other_bytes_is_data_loss() {
    let Some(bin) = kubo_binary() else { return };
    let node = Kubo::start(&bin, false);
    let state = tempfile::tempdir().unwrap();
    let store = node.store(state.path(), 32 << 20);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 239) as u8).collect();
    let (cid, _) = common::put(&store, &data, 1 << 20).await.unwrap();
    let root = store.ipfs_root(&cid).await.unwrap();

    let mut same_length = data.clone();
    same_length[500_000] ^= 1;
    for (what, other) in [
        ("one flipped bit", same_length),
        ("a shorter file", data[..700_000].to_vec()),
    ] {
        // The node serves whatever the mapping names: point it at other content.
        let other_root = node.add(&other);
        let path = state.path().join(IPFS_INDEX_FILE);
        let index = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, index.replace(&root, &other_root)).unwrap();
        let store = node.store(state.path(), 32 << 20);
        match common::get(&store, &cid).await {
            Err(e @ BlobError::Corrupt { .. }) => {
                assert_eq!(blob_status(e).code(), tonic::Code::DataLoss, "{what}");
            }
            other => panic!(
                "{what}: not caught as corrupt: {:?}",
                other.map(|b| b.len())
            ),
        }
        std::fs::write(&path, index).unwrap();
    }
    let store = node.store(state.path(), 32 << 20);
    assert!(common::get(&store, &cid).await.unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_ipfs_node_fetches_the_blob_from_the_first() {
    let Some(bin) = kubo_binary() else { return };
    let (first, second) = (Kubo::start(&bin, true), Kubo::start(&bin, true));
    let (state1, state2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store1 = first.store(state1.path(), 32 << 20);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 233) as u8).collect();
    let (cid, _) = common::put(&store1, &data, 1 << 20).await.unwrap();
    let root = store1.ipfs_root(&cid).await.unwrap();

    // The second node has none of it, until connected to the first (loopback, no bootstrap).
    let has_locally = |n: &Kubo| n.ipfs(&["--offline", "block", "stat", &root], None).is_ok();
    assert!(
        !has_locally(&second),
        "the second node has the blob before connecting"
    );
    let id = first.ipfs(&["id", "-f", "<id>"], None).unwrap();
    let addrs = first.ipfs(&["id", "-f", "<addrs>"], None).unwrap();
    let addr = addrs
        .lines()
        .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
        .unwrap_or_else(|| panic!("no loopback TCP address in {addrs:?}"));
    let target = if addr.contains("/p2p/") {
        addr.to_owned()
    } else {
        format!("{addr}/p2p/{}", id.trim())
    };
    second.ipfs(&["swarm", "connect", &target], None).unwrap();

    // A gateway on the second node with the first one's mapping reads the blob through it.
    std::fs::copy(
        state1.path().join(IPFS_INDEX_FILE),
        state2.path().join(IPFS_INDEX_FILE),
    )
    .unwrap();
    let store2 = second.store(state2.path(), 32 << 20);
    let back = tokio::time::timeout(Duration::from_secs(60), common::get(&store2, &cid))
        .await
        .expect("the second node did not fetch the blob in 60 s")
        .unwrap();
    assert!(back == data, "the second node returned other bytes");
    assert!(has_locally(&second), "not fetched into the second node");
}
