//! Tx decoding and the stateless checks (`Tx::decode`), as CheckTx runs them on mempool bytes.
//!
//! Input: the tx bytes. Properties: no panic; decoding is deterministic; an accepted tx is the
//! canonical encoding of its envelope and body (one byte form per tx), its hash is the bytes'
//! SHA-256, its chain id, message count, memo, fee and renewal position obey the limits, an
//! attached certificate is the signer's; and the signature check with the attached
//! certificate's key agrees with OpenSSL's one-shot verification.

#![no_main]

use libfuzzer_sys::fuzz_target;
use neurodata_abci::membership::MemberCertificate;
use neurodata_abci::tx::{Action, Tx};
use neurodata_abci::verifier::{SignatureVerifier, VerifyMode};
use neurodata_fuzz as fx;
use neurodata_proto::chain::v1 as pb;
use prost::Message as _;

/// OpenSSL's own verdict: ECDSA P-256 with SHA-256 over the body bytes.
fn reference_verify(spki: &[u8], body: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = openssl::pkey::PKey::public_key_from_der(spki) else {
        return false;
    };
    openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key)
        .and_then(|mut v| v.verify_oneshot(signature, body))
        .unwrap_or(false)
}

fuzz_target!(init: fx::seed_mode("tx_decode", fx::seeds::tx_decode), |data: &[u8]| {
    let limits = fx::tx_limits();
    let first = Tx::decode(data, &limits);
    match (&first, &Tx::decode(data, &limits)) {
        (Ok(a), Ok(b)) => assert_eq!(a.body, b.body, "decoding is deterministic"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "decoding is deterministic"),
        _ => panic!("decoding is not deterministic"),
    }
    let tx = match first {
        Ok(tx) => tx,
        Err(e) => {
            // Every refusal has a stable code and codespace.
            let _ = (e.code(), e.codespace());
            return;
        }
    };
    let envelope = pb::Tx {
        body: tx.body_bytes.clone(),
        signature: tx.signature.clone(),
    };
    assert_eq!(envelope.encode_to_vec(), data, "an accepted tx is its canonical encoding");
    assert_eq!(tx.hash, fx::sha256(data));
    let body = pb::TxBody::decode(tx.body_bytes.as_slice()).expect("an accepted body decodes");
    assert_eq!(body.encode_to_vec(), tx.body_bytes, "an accepted body is canonical");
    assert_eq!(tx.body.chain_id, limits.chain_id);
    assert_eq!(tx.body.signer.0.as_slice(), body.signer.as_slice());
    assert_eq!(tx.body.nonce, body.nonce);
    assert_eq!(tx.body.fee.to_string(), body.fee, "the fee is a canonical decimal");
    assert!(tx.body.memo.len() <= 256);
    let count = tx.body.messages.len();
    assert!((1..=limits.max_messages as usize).contains(&count));
    assert_eq!(count, body.messages.len());
    for (i, m) in tx.body.messages.iter().enumerate() {
        assert!(!m.roles().is_empty(), "{} names no role", m.name());
        if matches!(m, Action::RenewCertificate(_)) {
            assert_eq!(i, count - 1, "a renewal is its tx's last message");
        }
    }
    if let Some(der) = &tx.body.certificate {
        assert_eq!(fx::sha256(der), tx.body.signer.0, "the attached certificate is the signer's");
        if let Ok(cert) = MemberCertificate::parse(der) {
            let ours = SignatureVerifier::default()
                .verify(&tx, &cert.spki, VerifyMode::CheckTx)
                .is_ok();
            let reference = reference_verify(&cert.spki, &tx.body_bytes, &tx.signature);
            assert_eq!(ours, reference, "the signature check disagrees with OpenSSL");
        }
    }
});
