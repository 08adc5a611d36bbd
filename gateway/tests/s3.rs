//! The blob store's S3 backend against a real S3-compatible server speaking the S3 HTTP protocol
//! (moto's server, from the project's Python environment): multipart upload to a temporary key,
//! server-side copy under the CID, CID checks both ways, nothing visible after a failed upload.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use neurodata_gateway::blobstore::{BlobStore, S3Settings};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn start_s3() -> (Server, u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = Command::new(root.join("scripts/python-env.sh"))
        .output()
        .unwrap();
    assert!(
        env.status.success(),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );
    let python = String::from_utf8_lossy(&env.stdout).trim().to_owned();
    let port = free_port();
    let child = Command::new(python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "S3 server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let created = http(
        port,
        &format!("PUT /blobs HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"),
    );
    assert!(
        created.starts_with("HTTP/1.0 200") || created.starts_with("HTTP/1.1 200"),
        "{created}"
    );
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_passes_the_blob_store_suite() {
    let (_server, port) = start_s3();
    let store = BlobStore::open_s3(
        &S3Settings {
            bucket: "blobs".into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: "us-east-1".into(),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
        },
        32 << 20,
    )
    .unwrap();

    // 12 MB: more than one 5 MiB multipart part; the rest as for every backend.
    common::blob_store_suite(&store).await;
}
