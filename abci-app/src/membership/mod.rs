//! Membership: who may sign what.
//!
//! Every transaction's signer is a member certificate (ECDSA P-256) issued by the current root
//! CA of an active org, valid at the **block time**, not revoked, and whose role (OU) allows each
//! message. A certificate is registered on chain the first time a tx carries it. Org admins revoke
//! their own org's certificates ([`RevokeCertificate`]) and move an identity's funds, open
//! purchases and listings to a successor of the same org ([`MoveIdentity`]), so expiry,
//! revocation or a CA rotation never strands a balance. A member renews its own certificate
//! before it expires ([`RenewCertificate`]): the same succession, signed by the member, which
//! also links the two certificates and retires the old one. [`expiry`] announces certificates
//! (members' and org CAs') a governance-set number of days before they expire.
//!
//! Read [`rule`] for the full rule (one pure function, [`check_member`], that the chain and the
//! gateway both call), [`check_signer`] for how the chain fetches its records, [`certificate`] for
//! how certificates are parsed and checked, and [`view`] for the records.

pub mod certificate;
pub mod expiry;
mod move_identity;
mod renew;
mod revoke;
pub mod rule;
pub mod state_key;
pub mod succession;
pub mod view;

pub use certificate::{CaCertificate, MemberCertificate};
pub use move_identity::MoveIdentity;
pub use neurodata_certs::Role;
pub use renew::RenewCertificate;
pub use revoke::RevokeCertificate;
pub use rule::{Permission, Presented, check_member};
pub use view::{MembershipRead, MembershipWrite};

use neurodata_proto::chain::v1 as pb;

use crate::TxError;
use crate::address::Address;
use crate::state::StateRead;
use crate::tx::TxBody;

/// Why a signer or a membership action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The certificate (or a CA's PEM) does not parse as X.509; the message is the parser's.
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// The attached certificate's SHA-256 is not the tx's `signer`.
    #[error("signer {signer} is not the SHA-256 of the attached certificate ({actual})")]
    FingerprintMismatch {
        /// The signer field.
        signer: String,
        /// SHA-256 of the certificate.
        actual: String,
    },
    /// The signer has never been seen on chain and the tx does not carry its certificate.
    #[error("unknown signer {0}: attach the certificate to the signer's first transaction")]
    UnknownSigner(String),
    /// No active org has a CA whose subject is the certificate's issuer.
    #[error("certificate issuer {issuer:?} is not the CA of any admitted org")]
    UnknownCa {
        /// Issuer distinguished name.
        issuer: String,
    },
    /// The certificate names an org's CA but was not signed by it.
    #[error("certificate is not signed by the CA of org {org}")]
    NotSignedByCa {
        /// The org.
        org: String,
    },
    /// The signer's org was removed by governance.
    #[error("org {org} is not an active member")]
    OrgNotActive {
        /// The org.
        org: String,
    },
    /// The org rotated its CA after this certificate was issued.
    #[error(
        "certificate was issued by a previous CA of org {org}; get a certificate from its current CA"
    )]
    CaRotated {
        /// The org.
        org: String,
    },
    /// Block time is before the certificate's notBefore.
    #[error("certificate not valid until {not_before} (block time {block_time})")]
    NotYetValid {
        /// notBefore, Unix seconds.
        not_before: i64,
        /// Block time, Unix seconds.
        block_time: i64,
    },
    /// Block time is after the certificate's notAfter. An expired certificate cannot sign
    /// anything, its own renewal included.
    #[error(
        "certificate expired at {not_after} (block time {block_time}); an expired certificate \
         cannot sign, not even its renewal: an admin of its org moves its identity to a new \
         certificate (MoveIdentity, `ndctl ca move-identity`)"
    )]
    Expired {
        /// notAfter, Unix seconds.
        not_after: i64,
        /// Block time, Unix seconds.
        block_time: i64,
    },
    /// The certificate was revoked by its org's admin.
    #[error("certificate {fingerprint} was revoked at height {height}")]
    Revoked {
        /// The certificate.
        fingerprint: String,
        /// Height of the revocation.
        height: u64,
    },
    /// The signer's role may not send this message.
    #[error("role {role} may not send {message}; allowed: {allowed}")]
    RoleNotAllowed {
        /// The signer's role.
        role: String,
        /// The message type.
        message: &'static str,
        /// Roles that may.
        allowed: String,
    },
    /// An admin tried to revoke a certificate of another org.
    #[error("certificate belongs to org {cert_org}; an admin of {admin_org} cannot revoke it")]
    ForeignCertificate {
        /// Org of the certificate.
        cert_org: String,
        /// Org of the admin.
        admin_org: String,
    },
    /// Revoking a certificate that is already revoked.
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(String),
    /// Revoking a certificate the chain never saw, without attaching it.
    #[error("certificate {0} was never used on chain: attach its DER to revoke it")]
    UnknownCertificate(String),
    /// An identity already moved to another successor.
    #[error("identity {from} already moved to {successor}; move it to the same successor again")]
    AlreadyMoved {
        /// The identity.
        from: String,
        /// Its successor.
        successor: String,
    },
    /// The certificate's key is not ECDSA P-256, the one scheme the chain verifies.
    #[error("certificate public key is not ECDSA P-256 (the only key type the chain verifies)")]
    KeyNotP256,
    /// An org root certificate lacks basicConstraints CA:TRUE.
    #[error("org root certificate is not a CA (basicConstraints CA:TRUE)")]
    RootNotCa,
    /// An org root certificate's issuer is not its subject.
    #[error("org root CA must be self-signed (its issuer is not its subject)")]
    RootNotSelfSigned,
    /// An org root certificate's self-signature does not verify with its own key.
    #[error("org root CA's self-signature does not verify")]
    RootSignatureInvalid,
    /// A member certificate does not carry exactly one subject OU (its role).
    #[error("certificate has {count} subject OUs; it carries exactly one, the member's role")]
    RoleCount {
        /// OUs in the subject.
        count: usize,
    },
    /// A member certificate's OU is not a known role.
    #[error("OU {ou:?} is not a role (provider, buyer, trainer, validator, admin)")]
    UnknownRole {
        /// The OU.
        ou: String,
    },
    /// A CA certificate was attached as a signer's certificate.
    #[error("a CA certificate cannot sign transactions")]
    CaCannotSign,
    /// The certificate was renewed: its successor signs now.
    #[error(
        "certificate {fingerprint} was renewed to {successor}: sign with the renewed certificate"
    )]
    Renewed {
        /// The renewed (retired) certificate.
        fingerprint: String,
        /// The certificate it was renewed to.
        successor: String,
    },
    /// A renewal's new certificate differs from the current one in what a renewal keeps.
    #[error(
        "a renewal keeps the {what}: the current certificate has {current:?}, the new one {new:?}"
    )]
    RenewalMismatch {
        /// What differs: `org`, `common name` or `role`.
        what: &'static str,
        /// The current certificate's.
        current: String,
        /// The new certificate's.
        new: String,
    },
    /// A renewal's new certificate does not expire after the current one.
    #[error(
        "the new certificate expires at {new_not_after}, not after the current one \
         ({current_not_after}): a renewal extends the validity"
    )]
    RenewalNotLater {
        /// The current certificate's notAfter, Unix seconds.
        current_not_after: i64,
        /// The new certificate's notAfter, Unix seconds.
        new_not_after: i64,
    },
    /// A renewal's new certificate is already registered on chain (it signed, or was moved to
    /// or renewed to before): it may hold an identity of its own.
    #[error("certificate {0} is already registered on chain: renew to a certificate never used")]
    AlreadyRegistered(String),
    /// A renewal names the certificate that signs it.
    #[error("the new certificate is the one signing the renewal: renew to another certificate")]
    RenewalToSelf,
    /// A renewal's new certificate was issued by the CA its org is rotating out (in the
    /// rotation's grace period).
    #[error(
        "the new certificate was issued by the CA org {org} is rotating out: renew to a \
         certificate of its current CA"
    )]
    RenewalFromRetiringCa {
        /// The org.
        org: String,
    },
}

impl MembershipError {
    /// Stable code: 20..40, then 220..240 once that block filled (see [`crate::CODE_BLOCKS`]).
    pub fn code(&self) -> u32 {
        match self {
            MembershipError::BadCertificate(_) => 20,
            MembershipError::FingerprintMismatch { .. } => 21,
            MembershipError::UnknownSigner(_) => 22,
            MembershipError::UnknownCa { .. } => 23,
            MembershipError::NotSignedByCa { .. } => 24,
            MembershipError::OrgNotActive { .. } => 25,
            MembershipError::CaRotated { .. } => 26,
            MembershipError::NotYetValid { .. } => 27,
            MembershipError::Expired { .. } => 28,
            MembershipError::Revoked { .. } => 29,
            MembershipError::RoleNotAllowed { .. } => 30,
            MembershipError::ForeignCertificate { .. } => 31,
            MembershipError::AlreadyRevoked(_) => 32,
            MembershipError::UnknownCertificate(_) => 33,
            MembershipError::AlreadyMoved { .. } => 34,
            MembershipError::KeyNotP256 => 35,
            MembershipError::RootNotCa => 36,
            MembershipError::RootNotSelfSigned => 37,
            MembershipError::RootSignatureInvalid => 38,
            MembershipError::RoleCount { .. } => 39,
            MembershipError::UnknownRole { .. } => 220,
            MembershipError::CaCannotSign => 221,
            MembershipError::Renewed { .. } => 222,
            MembershipError::RenewalMismatch { .. } => 223,
            MembershipError::RenewalNotLater { .. } => 224,
            MembershipError::AlreadyRegistered(_) => 225,
            MembershipError::RenewalToSelf => 226,
            MembershipError::RenewalFromRetiringCa { .. } => 227,
        }
    }
}

/// Checks that `identity` may act at `block_time`: its org active, issued by the org's current CA,
/// not revoked, within its validity ([`rule::live`] on the records of `state`). The rule for
/// successors of a moved identity; signers go through [`check_signer`].
pub fn check_live<S: StateRead>(
    state: &S,
    identity: &pb::Identity,
    block_time: i64,
) -> Result<(), TxError> {
    let org = state.org(&identity.org_id)?;
    let revocation = match Presented::Registered(identity).fingerprint() {
        Some(fingerprint) => state.revocation(&fingerprint)?,
        None => None,
    };
    rule::live(identity, org.as_ref(), revocation.as_ref(), block_time)?;
    Ok(())
}

/// The signer of a transaction after every membership check passed.
#[derive(Clone, Debug)]
pub struct Signer {
    /// The signer's identity record.
    pub identity: pb::Identity,
    /// Its parsed role.
    pub role: Role,
    /// Whether this tx registers the identity (first use of the certificate).
    pub is_new: bool,
}

/// Checks that the tx's signer may send its messages at `block_time`. The signature itself is
/// checked by the caller against [`Signer::identity`]'s key (so it can be cached).
pub fn authenticate<S: StateRead>(
    state: &S,
    body: &TxBody,
    block_time: i64,
    height: u64,
) -> Result<Signer, TxError> {
    let permissions: Vec<Permission<'_>> = body
        .messages
        .iter()
        .map(|action| Permission {
            action: action.name(),
            roles: action.roles(),
        })
        .collect();
    check_signer(
        state,
        &body.signer,
        body.certificate.as_deref(),
        &permissions,
        block_time,
        height,
    )
}

/// The membership rule as the chain applies it: fetches what [`check_member`] reads for `signer`
/// (its registered identity, else `certificate`, which must hash to it; the org it names; its
/// revocation) from `state` and applies the rule at `block_time`. A new certificate's identity
/// comes back with `registered_height` = `height`, for the caller to register.
pub fn check_signer<S: StateRead>(
    state: &S,
    signer: &Address,
    certificate: Option<&[u8]>,
    permissions: &[Permission<'_>],
    block_time: i64,
    height: u64,
) -> Result<Signer, TxError> {
    let registered = state.identity(&signer.0)?;
    let parsed;
    let presented = match &registered {
        Some(identity) => Presented::Registered(identity),
        None => {
            let der = certificate.ok_or_else(|| MembershipError::UnknownSigner(signer.to_hex()))?;
            parsed = MemberCertificate::parse(der)?;
            Presented::Certificate(&parsed)
        }
    };
    let org = state.org_of(&presented)?;
    let revocation = match presented.fingerprint() {
        Some(fingerprint) => state.revocation(&fingerprint)?,
        None => None,
    };
    let member = check_member(
        presented,
        org.as_ref(),
        revocation.as_ref(),
        block_time,
        permissions,
    )?;
    let is_new = registered.is_none();
    let mut identity = member.identity;
    if is_new {
        identity.registered_height = height;
    }
    Ok(Signer {
        identity,
        role: member.role,
        is_new,
    })
}
