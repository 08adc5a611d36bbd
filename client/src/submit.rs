//! Signing the next tx of a signer: the one place that picks the nonce, attaches the certificate
//! when the chain has not seen it, signs and sends.
//!
//! The nonce is read from the chain once and then counted locally, so txs signed back to back
//! (before the first is in a block) get consecutive nonces. When the chain refuses a tx the count
//! is dropped and read again; when it refused the nonce itself (replayed or skipping ahead:
//! another process signed with the same identity, or a signed tx was never sent)
//! [`Submitter::submit`] signs once more with the nonce the chain reports.

use neurodata_abci::query;
use neurodata_proto::chain::v1 as pb;

use crate::access::{ChainAccess, Committed};
use crate::{Amount, ClientError, Signer, TxParams};

/// What the submitter knows of its signer on chain.
#[derive(Clone, Debug)]
struct Known {
    chain_id: String,
    next_nonce: u64,
    identity_on_chain: bool,
}

/// Signs and sends txs of one signer over one chain connection.
pub struct Submitter<'a, C> {
    chain: &'a C,
    signer: &'a Signer,
    fee: Amount,
    chain_id: Option<String>,
    known: tokio::sync::Mutex<Option<Known>>,
}

impl<'a, C: ChainAccess> Submitter<'a, C> {
    /// A submitter paying `fee` per tx.
    pub fn new(chain: &'a C, signer: &'a Signer, fee: Amount) -> Self {
        Submitter {
            chain,
            signer,
            fee,
            chain_id: None,
            known: tokio::sync::Mutex::new(None),
        }
    }

    /// Signs only for `chain_id` (the chain a trust root names), whatever chain the connection
    /// says it reaches: a server cannot get txs signed for another chain that accepts the same
    /// certificate.
    pub fn for_chain(mut self, chain_id: &str) -> Self {
        self.chain_id = Some(chain_id.to_owned());
        self
    }

    /// The signer.
    pub fn signer(&self) -> &Signer {
        self.signer
    }

    async fn fetch(&self) -> Result<Known, ClientError> {
        let address = self.signer.address();
        let (chain_id, account, identity) = tokio::try_join!(
            self.chain.chain_id(),
            self.chain.record(query::account(address)),
            self.chain.record(query::identity(address)),
        )?;
        if let Some(expected) = &self.chain_id
            && *expected != chain_id
        {
            return Err(ClientError::Proof(format!(
                "the connection reaches chain {chain_id}, the trust root is for chain {expected}: \
                 nothing signed"
            )));
        }
        Ok(Known {
            chain_id,
            next_nonce: account.map(|a| a.nonce).unwrap_or(0),
            identity_on_chain: identity.is_some(),
        })
    }

    /// Signs `messages` as the signer's next tx (with `memo`), counting its nonce as used. The
    /// tx is not sent: [`Submitter::send`] does that (callers that journal a tx before sending
    /// it sign and send apart).
    pub async fn sign(
        &self,
        messages: Vec<pb::Message>,
        memo: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let mut known = self.known.lock().await;
        let k = match known.as_mut() {
            Some(k) => k,
            None => known.insert(self.fetch().await?),
        };
        let tx = self.signer.sign(
            TxParams {
                chain_id: k.chain_id.clone(),
                nonce: k.next_nonce,
                fee: self.fee,
                attach_certificate: !k.identity_on_chain,
                memo: memo.to_owned(),
            },
            messages,
        )?;
        // Every tx carries the certificate until one is in a block: CheckTx judges a signer
        // by the committed state, where a certificate still pending is not.
        k.next_nonce += 1;
        Ok(tx)
    }

    /// Forgets the local nonce count (a tx signed by [`Submitter::sign`] was refused or never
    /// sent), so the next tx reads it from the chain again.
    pub async fn resync(&self) {
        *self.known.lock().await = None;
    }

    /// Sends a signed tx and waits for its block. A refusal forgets the local count (a refused
    /// tx used no nonce, or the chain's count moved on), so the next [`Submitter::sign`] reads it
    /// from the chain again; a timeout or a lost connection keeps it (the tx may still commit).
    pub async fn send(&self, tx: Vec<u8>) -> Result<Committed, ClientError> {
        let r = self.chain.broadcast(tx).await;
        match &r {
            Ok(_) => {
                if let Some(k) = self.known.lock().await.as_mut() {
                    k.identity_on_chain = true;
                }
            }
            Err(ClientError::Rejected { .. }) => self.resync().await,
            Err(_) => {}
        }
        r
    }

    /// Signs `messages` as the next tx, sends it and waits for its block; if the chain refuses
    /// the nonce (another process used the identity), resyncs and tries once more.
    pub async fn submit(&self, messages: Vec<pb::Message>) -> Result<Committed, ClientError> {
        let tx = self.sign(messages.clone(), "").await?;
        match self.send(tx).await {
            Err(e) if e.is_stale_nonce() => {
                let tx = self.sign(messages, "").await?;
                self.send(tx).await
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use neurodata_abci::query::{Proof, Query};
    use prost::Message as _;

    use super::*;
    use crate::access::{Answer, LightBlock};
    use crate::msg;

    /// A chain that keeps one signer's account: a tx must carry its next nonce, and the
    /// certificate until one tx carried it.
    #[derive(Default)]
    struct Ledger {
        next_nonce: Mutex<u64>,
        identity: Mutex<bool>,
        sent: Mutex<Vec<pb::TxBody>>,
    }

    impl ChainAccess for Ledger {
        async fn chain_id(&self) -> Result<String, ClientError> {
            Ok("test-chain".into())
        }
        async fn latest_height(&self) -> Result<u64, ClientError> {
            Ok(1)
        }
        async fn read(&self, q: &Query, _: u64, _: bool) -> Result<Answer, ClientError> {
            let value = match q {
                Query::Account(a) => pb::Account {
                    address: a.0.to_vec(),
                    balance: "100".into(),
                    nonce: *self.next_nonce.lock().unwrap(),
                }
                .encode_to_vec(),
                Query::Identity(_) if *self.identity.lock().unwrap() => {
                    pb::Identity::default().encode_to_vec()
                }
                _ => vec![],
            };
            let key = match q.proof() {
                Proof::Key(k) => k,
                Proof::None => String::new(),
            };
            Ok(Answer {
                height: 1,
                key,
                value,
                proof: vec![],
            })
        }
        async fn light_block(&self, h: u64) -> Result<LightBlock, ClientError> {
            Err(ClientError::NotYet(format!("block {h}")))
        }
        async fn broadcast(&self, tx: Vec<u8>) -> Result<Committed, ClientError> {
            let envelope = pb::Tx::decode(tx.as_slice()).unwrap();
            let body = pb::TxBody::decode(envelope.body.as_slice()).unwrap();
            let mut next = self.next_nonce.lock().unwrap();
            let refuse = |code: u32| ClientError::Rejected {
                hash: String::new(),
                codespace: "tx".into(),
                code,
                log: format!("nonce {} but next is {}", body.nonce, *next),
            };
            if body.nonce < *next {
                return Err(refuse(8));
            }
            if body.nonce > *next {
                return Err(refuse(9));
            }
            let mut identity = self.identity.lock().unwrap();
            if !*identity && body.certificate.is_empty() {
                return Err(ClientError::Rejected {
                    hash: String::new(),
                    codespace: "membership".into(),
                    code: 20,
                    log: "unknown signer".into(),
                });
            }
            *identity = true;
            *next += 1;
            self.sent.lock().unwrap().push(body);
            Ok(Committed {
                height: 1,
                hash: String::new(),
                events: vec![],
            })
        }
    }

    fn signer() -> Signer {
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::{X509, X509NameBuilder};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "alice").unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        Signer::new(&cert.build(), key).unwrap()
    }

    fn transfer() -> Vec<pb::Message> {
        vec![msg::transfer(crate::Address([1; 32]), Amount(1))]
    }

    #[tokio::test]
    async fn txs_signed_back_to_back_get_consecutive_nonces_and_carry_the_certificate_until_one_commits()
     {
        let chain = Ledger::default();
        let alice = signer();
        let s = Submitter::new(&chain, &alice, Amount(1));
        let first = s.sign(transfer(), "").await.unwrap();
        let second = s.sign(transfer(), "").await.unwrap();
        s.send(first).await.unwrap();
        s.send(second).await.unwrap();
        let sent = chain.sent.lock().unwrap().clone();
        assert_eq!(sent.iter().map(|b| b.nonce).collect::<Vec<_>>(), [0, 1]);
        // Both were signed before either was in a block: both carry the certificate.
        assert!(sent.iter().all(|b| !b.certificate.is_empty()));
        s.submit(transfer()).await.unwrap();
        let third = chain.sent.lock().unwrap().last().cloned().unwrap();
        assert!(third.certificate.is_empty(), "registered by then");
    }

    #[tokio::test]
    async fn a_nonce_another_process_used_is_resynced_and_the_tx_signed_again() {
        let chain = Ledger::default();
        let alice = signer();
        let s = Submitter::new(&chain, &alice, Amount(1));
        s.submit(transfer()).await.unwrap();
        // The same identity signs elsewhere: the chain's next nonce moves past our count.
        *chain.next_nonce.lock().unwrap() += 2;
        let c = s.submit(transfer()).await;
        assert!(c.is_ok(), "{c:?}");
        let sent = chain.sent.lock().unwrap().clone();
        assert_eq!(sent.last().map(|b| b.nonce), Some(3));
        assert_eq!(sent.len(), 2, "the refused tx was not counted");
    }
}
