//! Dataset upload and download pipelines on one machine, as a provider's and a buyer's tools run
//! them against the org's blob store, without the network:
//! - upload: read the CSV, hash the plaintext, seal 64 KiB AES-256-GCM chunks (thread 1) →
//!   store the ciphertext in the gateway's local blob store, which computes its CID (thread 2);
//! - download: read the blob back, re-hashing it against its CID (thread 1) → open the chunks,
//!   hash the plaintext, write the file (thread 2); check the plaintext hash.
//!
//! Prints MB/s of plaintext for both and the process's peak RSS; the last line is JSON.
//! Usage: market_crypto FILE WORKDIR
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use neurodata_crypto::DataKey;
use neurodata_crypto::stream::{
    ChunkCipher, DEFAULT_CHUNK_SIZE, DecryptingWriter, HEADER_LEN, StreamHeader, TAG_LEN,
};
use neurodata_gateway::blobstore::BlobStore;

/// Chunks per message between the two threads (1 MiB of plaintext).
const BATCH: usize = 16;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(-1.0)
}

/// Reads `file`, hashes it, and sends its sealed stream in batches; returns the plaintext hash.
fn seal_file(
    file: PathBuf,
    key: DataKey,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> Result<[u8; 32], String> {
    let cs = DEFAULT_CHUNK_SIZE as usize;
    let header = StreamHeader::new(DEFAULT_CHUNK_SIZE).map_err(|e| e.to_string())?;
    let mut cipher = ChunkCipher::sealer(&key, &header).map_err(|e| e.to_string())?;
    let mut input = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut hasher = openssl::sha::Sha256::new();
    // One byte of look-ahead tells whether a full chunk is the last one.
    let mut plain = vec![0u8; cs * BATCH + 1];
    let mut have = 0usize;
    let mut index = 0u64;
    let mut out = header.to_bytes().to_vec();
    loop {
        while have < plain.len() {
            let n = input.read(&mut plain[have..]).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            have += n;
        }
        let eof = have < plain.len();
        out.reserve(cs * BATCH + BATCH * TAG_LEN + HEADER_LEN);
        let mut pos = 0;
        while have - pos > cs {
            cipher
                .seal(index, false, &plain[pos..pos + cs], &mut out)
                .map_err(|e| e.to_string())?;
            hasher.update(&plain[pos..pos + cs]);
            pos += cs;
            index += 1;
        }
        if eof {
            cipher
                .seal(index, true, &plain[pos..have], &mut out)
                .map_err(|e| e.to_string())?;
            hasher.update(&plain[pos..have]);
            tx.send(out).map_err(|e| e.to_string())?;
            return Ok(hasher.finish());
        }
        plain.copy_within(pos..have, 0);
        have -= pos;
        tx.send(std::mem::take(&mut out))
            .map_err(|e| e.to_string())?;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = PathBuf::from(args.next().ok_or("usage: market_crypto FILE WORKDIR")?);
    let work = PathBuf::from(args.next().ok_or("usage: market_crypto FILE WORKDIR")?);
    let size = std::fs::metadata(&file)?.len();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = BlobStore::open(&work.join("blobs"), u64::MAX)?;
    let key = DataKey::generate()?;

    // Upload.
    let t = Instant::now();
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    let (f, k) = (file.clone(), key.clone());
    let sealer = std::thread::spawn(move || seal_file(f, k, tx));
    let (cid, stored) = rt.block_on(async {
        let mut upload = store.begin().await?;
        while let Ok(block) = rx.recv() {
            upload.write(&block).await?;
        }
        upload.finish(None).await
    })?;
    let plaintext_sha = sealer.join().map_err(|_| "sealer panicked")??;
    let upload_s = t.elapsed().as_secs_f64();

    // Download.
    let t = Instant::now();
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    let out_path = work.join("plain.out");
    let opener_key = key.clone();
    let opener = std::thread::spawn(move || -> Result<[u8; 32], String> {
        let out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&out_path).map_err(|e| e.to_string())?,
        );
        let mut w = DecryptingWriter::new(out, &opener_key);
        while let Ok(block) = rx.recv() {
            w.write_all(&block).map_err(|e| e.to_string())?;
        }
        let (done, _) = w.finish().map_err(|e| e.to_string())?;
        Ok(done.plaintext_sha256)
    });
    rt.block_on(async {
        let mut blob = store.open_blob(&cid).await?;
        while let Some(chunk) = blob.next_chunk(1 << 20).await? {
            if tx.send(chunk).is_err() {
                break;
            }
        }
        drop(tx);
        Ok::<_, neurodata_gateway::blobstore::BlobError>(())
    })?;
    let downloaded_sha = opener.join().map_err(|_| "opener panicked")??;
    let download_s = t.elapsed().as_secs_f64();
    if downloaded_sha != plaintext_sha {
        return Err("the decrypted plaintext does not hash to the uploaded plaintext".into());
    }
    let mb = size as f64 / 1e6;
    let rss = peak_rss_mib();
    eprintln!(
        "{mb:.0} MB plaintext, {stored} bytes stored as {cid}\nupload   {:.0} MB/s ({upload_s:.2} s)\ndownload {:.0} MB/s ({download_s:.2} s)\npeak RSS {rss:.1} MiB",
        mb / upload_s,
        mb / download_s
    );
    println!(
        "{{\"upload_mb_s\": {:.1}, \"download_mb_s\": {:.1}, \"peak_rss_mib\": {rss:.1}}}",
        mb / upload_s,
        mb / download_s
    );
    Ok(())
}
