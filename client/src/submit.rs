//! Signing the next tx of a signer: the one place that picks the nonce, attaches the certificate
//! when the chain has not seen it, signs and sends.
//!
//! The nonce is read from the chain once and then counted locally, so txs signed back to back
//! (before the first is in a block) get consecutive nonces. When a send fails the count is
//! dropped and read again; when the chain refused the nonce itself (replayed or skipping ahead:
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
    known: tokio::sync::Mutex<Option<Known>>,
}

impl<'a, C: ChainAccess> Submitter<'a, C> {
    /// A submitter paying `fee` per tx.
    pub fn new(chain: &'a C, signer: &'a Signer, fee: Amount) -> Self {
        Submitter {
            chain,
            signer,
            fee,
            known: tokio::sync::Mutex::new(None),
        }
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
        k.next_nonce += 1;
        // The first tx carries the certificate; the ones after it may rely on it only once it
        // is in a block, which the pending count cannot tell: re-read on failure instead.
        k.identity_on_chain = true;
        Ok(tx)
    }

    /// Forgets the local nonce count (a tx signed by [`Submitter::sign`] was refused or never
    /// sent), so the next tx reads it from the chain again.
    pub async fn resync(&self) {
        *self.known.lock().await = None;
    }

    /// Sends a signed tx and waits for its block. Any failure forgets the local count (a
    /// refused tx used no nonce, or did not register the certificate), so the next
    /// [`Submitter::sign`] reads both from the chain again.
    pub async fn send(&self, tx: Vec<u8>) -> Result<Committed, ClientError> {
        let r = self.chain.broadcast(tx).await;
        if r.is_err() {
            self.resync().await;
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
