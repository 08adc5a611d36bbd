//! The IPFS backend: ciphertext lives in a kubo node, reached over its HTTP RPC API
//! (`/api/v0/...`, which must stay on loopback or a private network: it is unauthenticated).
//!
//! One blob has two names. Ours is the CIDv1 raw sha2-256 of the whole blob (what the chain
//! records and clients check); kubo addresses a file by the root of the UnixFS DAG it chunks it
//! into (`bafybei…` for anything over one 256 KiB block). So the gateway keeps the mapping
//! `cid → root size` in `ipfs.index` in its state directory, rewritten atomically on every change
//! ([`crate::durable::write_atomic`]), and a blob is visible under our CID exactly when it is in
//! that index:
//!
//! - Upload: the bytes stream to `/api/v0/add` (`cid-version=1&raw-leaves=true&pin=true`) as a
//!   multipart body while [`super::Upload`] hashes them. The closing boundary is sent only once
//!   the CID checked out; an upload that is refused (wrong CID, too large, client gone) ends the
//!   body with an error instead, so the node never completes that add and pins nothing. Once the
//!   node returns the root, the root is pinned again under the index lock (a concurrent delete of
//!   the same bytes may have unpinned it in between) and only then recorded.
//! - Delete ([`super::BlobStore::remove`]): unpin, then drop the mapping, so a failure half-way
//!   leaves a mapping that a retry completes, never a pin nobody knows about.
//! - Read: `/api/v0/cat` of the root, re-hashed by [`super::BlobReader`]: a node that returns
//!   other bytes (a wrong root, a bad disk, a lying peer) is caught at the end as
//!   [`BlobError::Corrupt`] (DATA_LOSS). A stream that stops before the length the node announced
//!   is the node failing ([`BlobError::Ipfs`], UNAVAILABLE), not corruption.
//!
//! Pins are not reference-counted: equal bytes have one root, so one of our CIDs owns each pin.
//! A node shared with other software that pins the same file loses that pin when we delete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::BlobError;
use crate::cid::Cid;

/// The index file's name in the state directory.
pub const INDEX_FILE: &str = "ipfs.index";
const HEADER: &str = "# neurodata-gateway IPFS index v1: cid kubo-root-cid size";

/// Upload chunks queued for the node at most: bounds the memory one upload holds.
const QUEUED_CHUNKS: usize = 4;

/// Longest answer read from a call that is not `cat` (add's root line, an error message).
const MAX_SMALL_ANSWER: usize = 64 << 10;

/// Where a kubo node is and where the gateway keeps the CID mapping.
#[derive(Clone, Debug)]
pub struct IpfsSettings {
    /// Base URL of the node's RPC API, e.g. `http://127.0.0.1:5001` (no `/api/v0`).
    pub api: String,
    /// Directory for `ipfs.index` (the gateway's state directory).
    pub state_dir: PathBuf,
}

/// Where one of our blobs is in the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    /// kubo's root CID of the file (a UnixFS DAG root, or a raw block for small blobs).
    pub root: String,
    /// The blob's size in bytes.
    pub size: u64,
}

/// A kubo node and the mapping from our CIDs to its roots.
#[derive(Debug)]
pub(super) struct IpfsNode {
    api: String,
    http: reqwest::Client,
    index_path: PathBuf,
    /// Held across the node calls that change pins, so pin state and the index change together.
    index: tokio::sync::Mutex<BTreeMap<Cid, Placement>>,
}

/// A root CID as kubo prints it: multibase text, so letters and digits only. Refusing anything
/// else keeps a damaged index from smuggling query syntax into an RPC URL.
fn valid_root(root: &str) -> bool {
    !root.is_empty() && root.len() <= 128 && root.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn parse_line(line: &str) -> Result<(Cid, Placement), String> {
    let mut parts = line.split(' ');
    let (Some(cid), Some(root), Some(size), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected `cid root size`".into());
    };
    let cid = cid.parse::<Cid>().map_err(|e| format!("cid: {e}"))?;
    if !valid_root(root) {
        return Err(format!("root {root:?} is not a CID"));
    }
    let size = size.parse().map_err(|e| format!("size: {e}"))?;
    Ok((
        cid,
        Placement {
            root: root.to_owned(),
            size,
        },
    ))
}

fn encode(index: &BTreeMap<Cid, Placement>) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for (cid, p) in index {
        out.push_str(&format!("{cid} {} {}\n", p.root, p.size));
    }
    out
}

fn index_error(path: &Path, line: usize, reason: String) -> BlobError {
    BlobError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("line {line}: {reason}"),
        ),
    }
}

/// Reads at most [`MAX_SMALL_ANSWER`] bytes of an answer.
async fn read_small(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_SMALL_ANSWER.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_SMALL_ANSWER {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// kubo's error body is `{"Message": "...", "Code": 0, "Type": "error"}`; the message is what
/// an operator needs.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("Message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// The root CID in add's answer: one JSON object per line, the root (with `quieter`) the last
/// one carrying a `Hash`. An error after the answer started streaming shows as a line with a
/// `Message` (or as no root at all).
fn added_root(answer: &str) -> Result<String, String> {
    let mut root = None;
    for line in answer.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("answer line {line:?}: {e}"))?;
        if let Some(hash) = v.get("Hash").and_then(|h| h.as_str()) {
            root = Some(hash.to_owned());
        } else if let Some(message) = v.get("Message").and_then(|m| m.as_str()) {
            return Err(message.to_owned());
        }
    }
    match root {
        Some(r) if valid_root(&r) => Ok(r),
        Some(r) => Err(format!("the node returned {r:?} as the root")),
        None => Err(format!("no root in the node's answer {answer:?}")),
    }
}

impl IpfsNode {
    /// Reads the index (creating the state directory). Does not contact the node: the gateway
    /// may start before it.
    pub fn open(settings: &IpfsSettings) -> Result<Self, BlobError> {
        let dir = &settings.state_dir;
        std::fs::create_dir_all(dir).map_err(super::io(dir))?;
        let index_path = dir.join(INDEX_FILE);
        let mut index = BTreeMap::new();
        match std::fs::read_to_string(&index_path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (cid, p) =
                        parse_line(line).map_err(|r| index_error(&index_path, i + 1, r))?;
                    index.insert(cid, p);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(super::io(&index_path)(e)),
        }
        let http = reqwest::Client::builder()
            // The RPC API is on loopback or the org's network, never behind the host's proxy.
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| BlobError::Ipfs {
                api: settings.api.clone(),
                op: "client",
                reason: e.to_string(),
            })?;
        Ok(IpfsNode {
            api: settings.api.trim_end_matches('/').to_owned(),
            http,
            index_path,
            index: tokio::sync::Mutex::new(index),
        })
    }

    fn error(&self, op: &'static str, reason: impl std::fmt::Display) -> BlobError {
        BlobError::Ipfs {
            api: self.api.clone(),
            op,
            reason: reason.to_string(),
        }
    }

    fn url(&self, op: &str) -> String {
        format!("{}/api/v0/{op}", self.api)
    }

    /// Calls an RPC that takes no body; any status but 200 is an error carrying kubo's message.
    async fn call(
        &self,
        op: &'static str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::Response, BlobError> {
        // Pins run under the index lock and `cat` waits for kubo to find the blocks: neither
        // may stall the store for ever when the node hangs. (A cat's body streams unbounded.)
        let limit = std::time::Duration::from_secs(if op == "cat" { 60 } else { 120 });
        let response =
            tokio::time::timeout(limit, self.http.post(self.url(op)).query(query).send())
                .await
                .map_err(|_| self.error(op, format!("no answer within {} s", limit.as_secs())))?
                .map_err(|e| self.error(op, format!("{e:#}")))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = read_small(response).await.unwrap_or_default();
        Err(self.error(op, format!("{status}: {}", error_message(&body))))
    }

    /// Where `cid` is in the node, if stored.
    pub async fn placement(&self, cid: &Cid) -> Option<Placement> {
        self.index.lock().await.get(cid).cloned()
    }

    /// Starts streaming a file to the node.
    pub fn begin_add(&self) -> AddSink {
        let boundary = format!("neurodata-{}{}", super::random_name(), super::random_name());
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let (tx, rx) = mpsc::channel::<BodyPart>(QUEUED_CHUNKS);
        // The body ends well-formed only after `End`; if the upload is dropped first the stream
        // fails, which aborts the request, so kubo sees a broken upload and adds nothing.
        let parts = futures::stream::unfold((rx, Some(tail)), |(mut rx, tail)| async move {
            let tail = tail?;
            let item = match rx.recv().await {
                Some(BodyPart::Chunk(bytes)) => (Ok(bytes), Some(tail)),
                Some(BodyPart::End) => (Ok(tail), None),
                None => (
                    Err(std::io::Error::other(
                        "upload abandoned before it was complete",
                    )),
                    None,
                ),
            };
            Some((item.0, (rx, item.1)))
        });
        let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(parts);
        let request = self
            .http
            .post(self.url("add"))
            .query(&[
                ("cid-version", "1"),
                ("raw-leaves", "true"),
                ("pin", "true"),
                ("quieter", "true"),
                ("progress", "false"),
            ])
            .header(
                CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(body));
        let api = self.api.clone();
        let fail = move |reason: String| BlobError::Ipfs {
            api: api.clone(),
            op: "add",
            reason,
        };
        let task = tokio::spawn(async move {
            let response = request.send().await.map_err(|e| fail(format!("{e:#}")))?;
            let status = response.status();
            let answer = read_small(response)
                .await
                .map_err(|e| fail(format!("{e:#}")))?;
            if !status.is_success() {
                return Err(fail(format!("{status}: {}", error_message(&answer))));
            }
            added_root(&answer).map_err(fail)
        });
        AddSink {
            api: self.api.clone(),
            body: Some(tx),
            request: Some(task),
        }
    }

    /// Makes `cid` visible as `root`: pins it (again: see the module doc) and records it.
    pub async fn record(&self, cid: Cid, root: String, size: u64) -> Result<(), BlobError> {
        let mut index = self.index.lock().await;
        self.call("pin/add", &[("arg", &root)]).await?;
        let previous = index.insert(cid, Placement { root, size });
        if let Err(e) = crate::durable::write_atomic(&self.index_path, encode(&index).as_bytes()) {
            match previous {
                Some(p) => index.insert(cid, p),
                None => index.remove(&cid),
            };
            return Err(super::io(&self.index_path)(e));
        }
        Ok(())
    }

    /// Unpins `cid`'s root and forgets the mapping. Returns whether it was stored.
    pub async fn remove(&self, cid: &Cid) -> Result<bool, BlobError> {
        let mut index = self.index.lock().await;
        let Some(placement) = index.get(cid).cloned() else {
            return Ok(false);
        };
        match self.call("pin/rm", &[("arg", &placement.root)]).await {
            Ok(_) => {}
            // Unpinned already (an earlier remove that failed to rewrite the index, or by hand).
            Err(BlobError::Ipfs { reason, .. }) if reason.contains("not pinned") => {}
            Err(e) => return Err(e),
        }
        index.remove(cid);
        if let Err(e) = crate::durable::write_atomic(&self.index_path, encode(&index).as_bytes()) {
            index.insert(*cid, placement);
            return Err(super::io(&self.index_path)(e));
        }
        Ok(true)
    }

    /// Starts reading a stored file.
    pub async fn cat(&self, placement: &Placement) -> Result<CatStream, BlobError> {
        let response = self.call("cat", &[("arg", &placement.root)]).await?;
        // kubo announces the file's length; a stream shorter than that is a failed read.
        let announced = response
            .headers()
            .get("X-Content-Length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(placement.size);
        Ok(CatStream {
            api: self.api.clone(),
            stream: response.bytes_stream().boxed(),
            pending: Bytes::new(),
            received: 0,
            announced,
        })
    }
}

enum BodyPart {
    Chunk(Bytes),
    End,
}

/// An add in progress: the body's sender and the request's task.
pub(super) struct AddSink {
    api: String,
    body: Option<mpsc::Sender<BodyPart>>,
    request: Option<JoinHandle<Result<String, BlobError>>>,
}

impl AddSink {
    fn error(&self, reason: impl std::fmt::Display) -> BlobError {
        BlobError::Ipfs {
            api: self.api.clone(),
            op: "add",
            reason: reason.to_string(),
        }
    }

    /// Why the request ended before the body did.
    async fn failure(&mut self) -> BlobError {
        self.body = None;
        match self.request.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(root)) => self.error(format_args!(
                    "the node answered {root} before the upload was complete"
                )),
                Err(e) => self.error(e),
            },
            None => self.error("the upload already failed"),
        }
    }

    /// Queues bytes for the node (waiting while [`QUEUED_CHUNKS`] are queued).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        let sent = match &self.body {
            Some(tx) => tx
                .send(BodyPart::Chunk(Bytes::copy_from_slice(data)))
                .await
                .is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failure().await)
        }
    }

    /// Ends the body well-formed and returns the root the node stored it under (pinned).
    pub async fn finish(&mut self) -> Result<String, BlobError> {
        let ended = match self.body.take() {
            Some(tx) => tx.send(BodyPart::End).await.is_ok(),
            None => false,
        };
        if !ended {
            return Err(self.failure().await);
        }
        match self.request.take() {
            Some(task) => task.await.map_err(|e| self.error(e))?,
            None => Err(self.failure().await),
        }
    }
}

impl Drop for AddSink {
    fn drop(&mut self) {
        // The sender drops after this, which fails the body; aborting the task also closes the
        // connection if the body was not being polled.
        if let Some(task) = self.request.take() {
            task.abort();
        }
    }
}

/// The bytes of a file being read from the node.
pub(super) struct CatStream {
    api: String,
    stream: BoxStream<'static, reqwest::Result<Bytes>>,
    pending: Bytes,
    received: u64,
    announced: u64,
}

impl CatStream {
    /// Appends up to `max - buf.len()` bytes to `buf`.
    pub async fn fill(&mut self, buf: &mut Vec<u8>, max: usize) -> Result<(), BlobError> {
        while buf.len() < max {
            if self.pending.is_empty() {
                match self.stream.next().await {
                    Some(chunk) => {
                        self.pending = chunk.map_err(|e| BlobError::Ipfs {
                            api: self.api.clone(),
                            op: "cat",
                            reason: format!("{e:#}"),
                        })?;
                        self.received = self.received.saturating_add(self.pending.len() as u64);
                    }
                    None => break,
                }
            }
            let take = self.pending.len().min(max - buf.len());
            buf.extend_from_slice(&self.pending.split_to(take));
        }
        Ok(())
    }

    /// At the end of the stream: an error if it stopped short of the announced length (kubo
    /// reports a failure mid-stream in a trailer, after a 200, so the body just ends).
    pub fn check_complete(&self) -> Result<(), BlobError> {
        if self.received < self.announced {
            return Err(BlobError::Ipfs {
                api: self.api.clone(),
                op: "cat",
                reason: format!(
                    "the node ended the file after {} of {} bytes",
                    self.received, self.announced
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_round_trip_and_bad_roots_are_refused() {
        let cid = Cid::of(b"blob");
        let mut index = BTreeMap::new();
        index.insert(
            cid,
            Placement {
                root: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi".into(),
                size: 4,
            },
        );
        let text = encode(&index);
        let parsed: Vec<_> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(parse_line)
            .collect();
        assert_eq!(parsed, vec![Ok((cid, index[&cid].clone()))]);
        assert!(parse_line(&format!("{cid} bafy&arg=x 4")).is_err());
        assert!(parse_line(&format!("{cid} bafy")).is_err());
    }

    #[test]
    fn add_answer_gives_the_root_or_the_error() {
        assert_eq!(
            added_root("{\"Name\":\"blob\",\"Hash\":\"bafkqaaa\",\"Size\":\"0\"}\n"),
            Ok("bafkqaaa".into())
        );
        assert_eq!(
            added_root("{\"Message\":\"unexpected EOF\",\"Code\":0,\"Type\":\"error\"}\n"),
            Err("unexpected EOF".into())
        );
        assert!(added_root("").is_err());
    }
}
