//! `ndctl`: the NeuroData operator and member CLI.
//!
//! Operators create CA material (`ca`), the dev consortium and the genesis `app_state`
//! (`genesis`); members sign transactions (`tx`) and read state with verified proofs (`query`).

mod conn;
mod dataset;
mod devnet;
mod job;
mod lifecycle;
mod model;
mod node;
mod preview;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use conn::{ChainArgs, Conn};
use neurodata_abci::address::Address;
use neurodata_abci::genesis::{Allocation, AppState, GenesisOrg, GenesisParams, GenesisValidator};
use neurodata_abci::governance::{Params, status_name};
use neurodata_abci::query;
use neurodata_certs::{OrgCa, Role, Validity};
use neurodata_client::{Amount, ChainAccess as _, Signer, msg};
use neurodata_proto::chain::v1 as pb;
use openssl::x509::X509;
use pb::proposal_action::Action as A;

/// NeuroData operator and member CLI.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    me: Me,
    #[command(subcommand)]
    command: Command,
}

/// Who you are and where the chain is: accepted anywhere on the command line, each with an
/// environment twin.
#[derive(Args, Clone, Debug)]
pub(crate) struct Me {
    #[command(flatten)]
    chain: ChainArgs,
    /// Your member certificate (PEM): it signs your txs and is your mTLS identity at a gateway.
    #[arg(long, global = true, env = "NEURODATA_CERT", alias = "signer-cert")]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, global = true, env = "NEURODATA_KEY", alias = "signer-key")]
    key: Option<PathBuf>,
}

/// The fee of a command that signs a tx.
#[derive(Args, Clone, Debug)]
pub(crate) struct FeeArgs {
    /// Fee in NRC (whole NRC: the token has no fractions).
    #[arg(long, env = "NEURODATA_FEE", default_value = "1")]
    fee: String,
}

#[derive(Subcommand)]
enum Command {
    /// Certificate authority: org CAs, member certificates, revocation.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Builds the genesis `app_state` (optionally written into a CometBFT genesis.json).
    Genesis(GenesisArgs),
    /// Inspect keys and certificates.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign and send a transaction.
    Tx(TxArgs),
    /// Read chain state (single records are verified with Merkle proofs).
    Query(QueryArgs),
    /// A local consortium network on loopback (real CometBFT nodes and apps).
    #[command(subcommand)]
    Devnet(devnet::DevnetCommand),
    /// The data marketplace: upload, browse, buy, download, confirm, refund, dispute.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Training jobs: submit, list, show, follow, cancel.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// The models marketplace: publish, browse, buy, install, predict, evaluate.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// A node's files: backup of a stopped node and restore into a fresh home.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// A dataset's leaderboard: model versions by the score validators attested on its hidden
    /// evaluation split, best first, with their lineage.
    Leaderboard {
        /// Dataset id.
        dataset: u64,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Creates an org root CA (`ca.pem`, `ca.key`) in DIR.
    Init {
        /// Org id (2..=32 of a-z, 0-9, '-').
        #[arg(long, env = "NEURODATA_ORG")]
        org: String,
        /// Org display name.
        #[arg(long)]
        name: String,
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issues a member certificate with ROLE from the CA in CA_DIR, writing NAME.pem and NAME.key.
    Issue {
        /// Directory holding `ca.pem` and `ca.key`.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Common name and file stem of the member.
        #[arg(long)]
        name: String,
        /// provider, buyer, trainer, validator or admin.
        #[arg(long)]
        role: String,
        /// Output directory (default: CA_DIR).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Revokes a member certificate of the admin's org on chain (signed with --cert/--key, an
    /// admin of that org).
    Revoke {
        #[command(flatten)]
        fee: FeeArgs,
        /// The certificate to revoke (PEM file).
        #[arg(value_name = "CERTIFICATE")]
        revoked: PathBuf,
        /// Why.
        #[arg(long, default_value = "revoked by org admin")]
        reason: String,
    },
    /// Moves an identity of your org (expired, revoked, from a rotated-out CA, or replaced) to a
    /// successor identity of the same org: its balance, open purchases and listings.
    MoveIdentity {
        #[command(flatten)]
        fee: FeeArgs,
        /// The certificate moved from (PEM file).
        #[arg(long)]
        from: PathBuf,
        /// The successor's certificate (PEM file), a live member of the same org.
        #[arg(long)]
        to: PathBuf,
        /// Why.
        #[arg(long, default_value = "moved to a successor by org admin")]
        reason: String,
    },
    /// Renews a member certificate of your org with the CA in CA_DIR (the org admin's step): a
    /// new certificate for the member's key, common name and role, written to OUT. The member
    /// then sends it to the chain with `ndctl ca renew`.
    Reissue {
        /// Directory holding `ca.pem` and `ca.key`.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The org's previous CA certificate (PEM), when CERTIFICATE was issued by it: moving
        /// members to the new CA during a rotation's grace period.
        #[arg(long)]
        previous_ca: Option<PathBuf>,
        /// The member's current certificate (PEM file).
        #[arg(value_name = "CERTIFICATE")]
        member: PathBuf,
        /// Where to write the renewed certificate (PEM).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days from now.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Renews your certificate on chain, signed with your current one (--cert/--key): your
    /// balance, purchases, listings, validator roles and training jobs move to NEW_CERT, and the
    /// current certificate stops signing. Do it before the current one expires (after, your org
    /// admin moves your identity with `ndctl ca move-identity`).
    Renew {
        #[command(flatten)]
        fee: FeeArgs,
        /// The renewed certificate (PEM file), from `ndctl ca reissue`.
        #[arg(long)]
        new_cert: PathBuf,
    },
    /// Lists the live member certificates and org CAs expiring soon, as the chain sees them:
    /// org, role, common name, fingerprint, expiry and days left.
    Expiring {
        /// Window in days after the last block's time (default: the chain's notice window,
        /// the `cert_expiry_notice_secs` parameter).
        #[arg(long)]
        days: Option<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Writes the dev consortium (3 orgs with CA, admin, provider, buyer, trainer, validator).
    DevConsortium {
        /// Output directory.
        #[arg(long, default_value = "./consortium")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct GenesisArgs {
    /// Org as ID=CA_PEM_FILE (repeat). Display name = id unless --org-name ID=NAME.
    #[arg(long = "org", required = true)]
    orgs: Vec<String>,
    /// Display names as ID=NAME.
    #[arg(long = "org-name")]
    org_names: Vec<String>,
    /// Validator as NAME:ORG:PUBKEY_BASE64:POWER[:OPERATOR_FINGERPRINT,...] (repeat).
    #[arg(long = "validator")]
    validators: Vec<String>,
    /// Allocation as ADDRESS_HEX=AMOUNT or CERT_PEM_FILE=AMOUNT (repeat).
    #[arg(long = "alloc")]
    allocations: Vec<String>,
    /// Minimum fee.
    #[arg(long, default_value = "0")]
    min_fee: String,
    /// Blocks a proposal stays open.
    #[arg(long, default_value_t = 1000)]
    proposal_voting_blocks: u64,
    #[command(flatten)]
    market: MarketParamsArgs,
    /// Write `app_state` into this CometBFT genesis.json instead of printing it.
    #[arg(long)]
    into: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Shows a certificate's address (fingerprint), org, role and validity.
    Show {
        /// PEM certificate.
        cert: PathBuf,
    },
}

/// What a command runs with: the global identity and chain flags, and the fee if it signs.
pub(crate) struct SignerArgs {
    chain: ChainArgs,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    fee: String,
}

impl SignerArgs {
    fn new(me: &Me, fee: Option<&FeeArgs>) -> Self {
        SignerArgs {
            chain: me.chain.clone(),
            cert: me.cert.clone(),
            key: me.key.clone(),
            fee: fee.map_or_else(|| "1".into(), |f| f.fee.clone()),
        }
    }

    /// Your certificate file.
    fn cert(&self) -> anyhow::Result<&Path> {
        self.cert.as_deref().context(
            "this command needs your member certificate: pass --cert FILE --key FILE (or set \
             NEURODATA_CERT and NEURODATA_KEY)",
        )
    }

    /// Your key file.
    fn key(&self) -> anyhow::Result<&Path> {
        self.key.as_deref().context(
            "this command needs your member key: pass --cert FILE --key FILE (or set \
             NEURODATA_CERT and NEURODATA_KEY)",
        )
    }

    /// Certificate and key, if both are given.
    fn identity(&self) -> Option<(&Path, &Path)> {
        self.cert.as_deref().zip(self.key.as_deref())
    }
}

#[derive(Args)]
struct TxArgs {
    #[command(flatten)]
    fee: FeeArgs,
    #[command(subcommand)]
    message: TxMessage,
}

#[derive(Subcommand)]
enum TxMessage {
    /// Sends NRC.
    Transfer {
        /// Recipient: a member's certificate PEM file, or its address (64 hex digits) if that
        /// address has signed before (has an identity on chain).
        #[arg(long)]
        to: String,
        /// Amount in NRC (whole NRC).
        #[arg(long)]
        amount: String,
        /// Send to a 64-hex address that has no identity on chain (nobody may hold its key).
        #[arg(long)]
        allow_unregistered: bool,
    },
    /// Opens a governance proposal (org admins).
    #[command(subcommand)]
    Propose(ProposeCommand),
    /// Votes on a proposal (org admins).
    Vote {
        /// Proposal id; repeat to vote on several proposals in one tx.
        #[arg(long, required = true)]
        proposal: Vec<u64>,
        /// Reject instead of approve.
        #[arg(long)]
        reject: bool,
    },
}

#[derive(Subcommand)]
enum ProposeCommand {
    /// Admit an org with its root CA.
    AdmitOrg {
        /// New org id.
        #[arg(long)]
        org: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Root CA PEM file.
        #[arg(long)]
        ca: PathBuf,
    },
    /// Remove an org.
    RemoveOrg {
        /// Org id.
        #[arg(long)]
        org: String,
    },
    /// Replace an org's root CA. With a grace period, certificates of the old CA keep signing
    /// until it ends, so members renew to certificates of the new CA (`ndctl ca reissue` by the
    /// org admin, `ndctl ca renew` by each member) without a moment unable to sign.
    RotateCa {
        /// Org id.
        #[arg(long)]
        org: String,
        /// New root CA PEM file.
        #[arg(long)]
        ca: PathBuf,
        /// Seconds after the rotation during which the old CA's certificates stay live (0: they
        /// stop at once; at most 366 days, e.g. 1209600 for two weeks).
        #[arg(long, default_value_t = 0)]
        grace_secs: u64,
    },
    /// Add, reweight (power > 0) or remove (power 0) a validator.
    SetValidator {
        /// Ed25519 public key, base64.
        #[arg(long)]
        pub_key: String,
        /// Voting power.
        #[arg(long)]
        power: i64,
        /// Operating org.
        #[arg(long, default_value = "")]
        org: String,
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// Certificate fingerprint (64 hex digits) of an operator of the validator, a member of
        /// its org: operators alone request datasets' keys to validate them and attest datasets,
        /// and the first one receives the validator's rewards. Repeat for several (at most 8).
        #[arg(long = "operator")]
        operators: Vec<String>,
    },
    /// Pay NRC out of the treasury or the reward pool.
    Spend {
        /// `treasury` or `reward-pool`.
        #[arg(long)]
        from: String,
        /// Recipient address (64 hex digits).
        #[arg(long)]
        to: String,
        /// Amount.
        #[arg(long)]
        amount: String,
    },
    /// Mint NRC into the treasury.
    Mint {
        /// Amount.
        #[arg(long)]
        amount: String,
    },
    /// Schedule a software upgrade: at HEIGHT every node stops unless its build knows NAME, in
    /// which case it runs NAME's state migration (height 0 cancels the pending plan NAME).
    ScheduleUpgrade {
        /// Upgrade name (a-z, 0-9, '.', '-'), as the new build knows it.
        #[arg(long)]
        name: String,
        /// Height to upgrade at (after the proposal passes), or 0 to cancel.
        #[arg(long)]
        height: u64,
        /// Notes for operators: the release, its binary digest.
        #[arg(long, default_value = "")]
        info: String,
    },
    /// Replace the chain parameters.
    Params {
        /// Minimum fee.
        #[arg(long)]
        min_fee: String,
        /// Voting period in blocks.
        #[arg(long)]
        proposal_voting_blocks: u64,
        /// Largest tx in bytes.
        #[arg(long)]
        max_tx_bytes: u64,
        /// Most messages per tx.
        #[arg(long)]
        max_messages_per_tx: u32,
        #[command(flatten)]
        market: MarketParamsArgs,
    },
}

/// The marketplace's windows and fee and the certificate expiry notice, in genesis and in a
/// parameter proposal.
#[derive(Args)]
struct MarketParamsArgs {
    /// Blocks a provider has to deliver a purchased key.
    #[arg(long, default_value_t = 100)]
    key_delivery_blocks: u64,
    /// Blocks a buyer has to confirm a purchase before it is released to the provider.
    #[arg(long, default_value_t = 600)]
    confirm_blocks: u64,
    /// Reward-pool share of each sale, basis points.
    #[arg(long, default_value_t = 200)]
    market_fee_bps: u32,
    /// Share of each model sale paid as royalties to the providers of the datasets it was
    /// trained on, basis points (with --market-fee-bps at most 10000).
    #[arg(long, default_value_t = 1000)]
    model_royalty_bps: u32,
    /// Most validation requests one org may have open at once.
    #[arg(long, default_value_t = 4)]
    max_open_validations_per_org: u32,
    /// Blocks between reward-pool payouts to validators' operators (0: never).
    #[arg(long, default_value_t = 100)]
    reward_epoch_blocks: u64,
    /// Days before a member certificate or org CA expires that the chain announces it
    /// (`certificate.expiring`; 1..=366).
    #[arg(long, default_value_t = 30)]
    cert_expiry_notice_days: u64,
}

#[derive(Args)]
struct QueryArgs {
    #[command(subcommand)]
    command: QueryCommand,
}

#[derive(Subcommand)]
enum QueryCommand {
    /// An account's balance and nonce (verified).
    Account {
        /// Address (64 hex) or certificate PEM file.
        address: String,
    },
    /// An org (verified).
    Org {
        /// Org id.
        org: String,
    },
    /// A proposal (verified).
    Proposal {
        /// Proposal id.
        id: u64,
    },
    /// A model version made final by the validators (verified): hash, job, datasets, metrics.
    ModelVersion {
        /// Model version id.
        id: u64,
    },
    /// Registered training workers.
    Workers,
    /// Total supply (verified).
    Supply,
    /// The pending software upgrade, if any (verified).
    Upgrade,
    /// All orgs.
    Orgs,
    /// All validators, and the jailed ones.
    Validators,
    /// All proposals.
    Proposals,
    /// Evidence of validators' misbehaviour (double signing) CometBFT reported, what the chain
    /// did about each, and the validators it jailed.
    Misbehaviour,
}

pub(crate) fn now() -> i64 {
    // Certificate issuance is an operator action, so the wall clock is right here (the chain
    // itself only ever uses block time).
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn cert_address(path: &Path) -> anyhow::Result<Address> {
    let cert = X509::from_pem(&read(path)?)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    Ok(Address(neurodata_certs::fingerprint(&cert)?))
}

/// An address given as 64 hex digits or as a certificate file.
fn parse_address(s: &str) -> anyhow::Result<Address> {
    if let Some(a) = Address::from_hex(s) {
        return Ok(a);
    }
    let p = Path::new(s);
    if p.exists() {
        return cert_address(p);
    }
    bail!("{s:?} is neither a 64-hex-digit address nor a certificate file")
}

/// An amount of NRC as the user typed it: whole NRC, the token has no fractions.
fn amount(s: &str) -> anyhow::Result<Amount> {
    if s.contains('.') || s.contains(',') {
        bail!("NRC has no fractions: amounts are whole NRC, got {s:?}");
    }
    s.parse()
        .with_context(|| format!("{s:?} is not an amount of NRC (a whole number, e.g. 25)"))
}

fn load_signer(a: &SignerArgs) -> anyhow::Result<Signer> {
    let (cert, key) = (a.cert()?, a.key()?);
    let x509 = X509::from_pem(&read(cert)?)
        .with_context(|| format!("{} is not a PEM certificate", cert.display()))?;
    let private = openssl::pkey::PKey::private_key_from_pem(&read(key)?)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    // The chain would only say the signature does not verify; the gateway check says this.
    if !x509.public_key()?.public_eq(&private) {
        bail!(
            "the key in {} is not the key of certificate {}",
            key.display(),
            cert.display()
        );
    }
    Ok(Signer::new(&x509, private)?)
}

async fn submit(a: &SignerArgs, messages: Vec<pb::Message>) -> anyhow::Result<()> {
    let signer = load_signer(a)?;
    let conn = Conn::open(&a.chain, a.identity()).await?;
    let c = conn.submit(&signer, amount(&a.fee)?, messages).await?;
    println!(
        "committed tx {} at height {} (signer {})",
        c.hash,
        c.height,
        signer.address()
    );
    Ok(())
}

fn genesis(args: GenesisArgs) -> anyhow::Result<()> {
    let names: Vec<(String, String)> = args
        .org_names
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .context("--org-name ID=NAME")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut orgs = Vec::new();
    for o in &args.orgs {
        let (id, file) = o.split_once('=').context("--org ID=CA_PEM_FILE")?;
        let name = names
            .iter()
            .find(|(i, _)| i == id)
            .map_or(id.to_owned(), |(_, n)| n.clone());
        orgs.push(GenesisOrg::from_ca_file(id, &name, Path::new(file))?);
    }
    let validators = args
        .validators
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            let (name, org, key, power, operators) = match parts.as_slice() {
                [name, org, key, power] => (name, org, key, power, ""),
                [name, org, key, power, operators] => (name, org, key, power, *operators),
                _ => bail!("--validator NAME:ORG:PUBKEY_BASE64:POWER[:OPERATOR_FP,...], got {v:?}"),
            };
            Ok(GenesisValidator {
                name: (*name).into(),
                org_id: (*org).into(),
                pub_key: (*key).into(),
                power: power.parse().context("validator power")?,
                operators: operators
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(|o| parse_address(o).map(|a| a.to_hex()))
                    .collect::<anyhow::Result<_>>()?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let allocations = args
        .allocations
        .iter()
        .map(|a| {
            let (who, amt) = a.rsplit_once('=').context("--alloc ADDRESS=AMOUNT")?;
            Ok(Allocation {
                address: parse_address(who)?.to_hex(),
                amount: amount(amt)?.to_string(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let params = Params {
        min_fee: amount(&args.min_fee)?,
        proposal_voting_blocks: args.proposal_voting_blocks,
        key_delivery_blocks: args.market.key_delivery_blocks,
        confirm_blocks: args.market.confirm_blocks,
        market_fee_bps: args.market.market_fee_bps,
        model_royalty_bps: args.market.model_royalty_bps,
        max_open_validations_per_org: args.market.max_open_validations_per_org,
        reward_epoch_blocks: args.market.reward_epoch_blocks,
        cert_expiry_notice_secs: args.market.cert_expiry_notice_days.saturating_mul(86_400),
        ..Params::default()
    };
    let app_state = AppState {
        orgs,
        validators,
        allocations,
        params: Some(GenesisParams::from(&params)),
    };
    match args.into {
        None => println!("{}", serde_json::to_string_pretty(&app_state)?),
        Some(path) => {
            let mut doc: serde_json::Value = serde_json::from_slice(&read(&path)?)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            app_state.put_into(&mut doc)?;
            std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
            println!("wrote app_state into {}", path.display());
        }
    }
    Ok(())
}

fn decode<M: prost::Message + Default>(bytes: &[u8]) -> anyhow::Result<M> {
    M::decode(bytes).context("decoding the node's answer")
}

async fn query(args: QueryArgs, me: &Me) -> anyhow::Result<()> {
    let me = SignerArgs::new(me, None);
    let conn = Conn::open(&me.chain, me.identity()).await?;
    match args.command {
        QueryCommand::Account { address } => {
            let address = parse_address(&address)?;
            let v = conn.verified(&query::account(address).query).await?;
            let account = match &v.value {
                Some(b) => decode::<pb::Account>(b)?,
                None => pb::Account {
                    address: address.0.to_vec(),
                    balance: "0".into(),
                    nonce: 0,
                },
            };
            println!(
                "account {address}\n  balance {} NRC\n  nonce   {}\n  height  {} (proof verified against app hash {})",
                account.balance,
                account.nonce,
                v.height,
                hex::encode(v.app_hash)
            );
        }
        QueryCommand::Org { org } => {
            let v = conn.verified(&query::org(org.clone()).query).await?;
            let o = decode::<pb::Org>(
                &v.value
                    .with_context(|| format!("org {org} does not exist"))?,
            )?;
            print_org(&o);
            println!("  (proof verified at height {})", v.height);
        }
        QueryCommand::Proposal { id } => {
            let v = conn.verified(&query::proposal(id).query).await?;
            let p = decode::<pb::Proposal>(
                &v.value
                    .with_context(|| format!("proposal {id} does not exist"))?,
            )?;
            print_proposal(&p);
        }
        QueryCommand::ModelVersion { id } => {
            let v = conn.verified(&query::model_version(id).query).await?;
            let m = decode::<pb::ModelVersion>(
                &v.value
                    .with_context(|| format!("model version {id} does not exist"))?,
            )?;
            println!(
                "model version {} ({}) from job {} on datasets {:?}\n  owner {} ({}), trained by {}\n  model sha256 {}\n  spec sha256 {}\n  metrics {}\n  onnx {}  model {}\n  final at height {} (proof verified at height {})",
                m.id,
                m.algorithm,
                m.job_id,
                m.dataset_ids,
                hex::encode(&m.owner),
                m.owner_org,
                hex::encode(&m.trainer),
                hex::encode(&m.model_sha256),
                hex::encode(&m.spec_sha256),
                m.metrics_json,
                m.onnx_cid,
                m.model_cid,
                m.height,
                v.height
            );
        }
        QueryCommand::Workers => {
            let (list, height) = conn.list(query::workers()).await?;
            println!("{} workers at height {height}", list.workers.len());
            for w in list.workers {
                println!(
                    "  {} ({}) capacity {} active {} final {} rejected {} missed {} at {}",
                    hex::encode(&w.address),
                    w.org_id,
                    w.capacity,
                    w.active,
                    w.finalized,
                    w.rejected,
                    w.missed,
                    w.location
                );
            }
        }
        QueryCommand::Supply => {
            let v = conn.verified(&query::supply().query).await?;
            let s = decode::<pb::Supply>(&v.value.unwrap_or_default())?;
            println!(
                "total supply {} NRC at height {} (verified)",
                s.total, v.height
            );
        }
        QueryCommand::Upgrade => {
            let v = conn.verified(&query::upgrade_plan().query).await?;
            match v.value {
                None => println!("no upgrade pending at height {} (verified)", v.height),
                Some(bytes) => {
                    let p = decode::<pb::UpgradePlan>(&bytes)?;
                    println!(
                        "upgrade {} at height {} (proposal {}; info {:?}) pending at height {} \
                         (verified)",
                        p.name, p.height, p.proposal_id, p.info, v.height
                    );
                }
            }
        }
        QueryCommand::Orgs => {
            let (list, h) = conn.list(query::orgs()).await?;
            if list.orgs.is_empty() {
                println!("no orgs at height {h}");
            } else {
                println!("orgs at height {h}:");
            }
            for o in list.orgs {
                print_org(&o);
            }
        }
        QueryCommand::Validators => {
            let (list, h) = conn.list(query::validators()).await?;
            if list.validators.is_empty() {
                println!("no validators at height {h}");
            } else {
                println!("validators at height {h}:");
            }
            for v in list.validators {
                println!(
                    "  {} power {} org {} ({})",
                    b64(&v.pub_key),
                    v.power,
                    v.org_id,
                    v.name
                );
            }
            let (jailed, _) = conn.list(query::jailed_validators()).await?;
            if !jailed.jailed.is_empty() {
                println!("jailed (out of the set until governance sets their power again):");
                for j in &jailed.jailed {
                    print_jailed(j);
                }
            }
        }
        QueryCommand::Misbehaviour => {
            let (list, h) = conn.list(query::misbehaviours()).await?;
            if list.misbehaviours.is_empty() {
                println!("no misbehaviour recorded at height {h}");
            } else {
                println!("misbehaviour recorded at height {h}:");
            }
            let mut records = list.misbehaviours;
            records.sort_by_key(|m| (m.reported_height, m.evidence_height));
            for m in &records {
                print_misbehaviour(m);
            }
            let (jailed, _) = conn.list(query::jailed_validators()).await?;
            if jailed.jailed.is_empty() {
                println!("no validator jailed");
            } else {
                println!("jailed validators:");
            }
            for j in &jailed.jailed {
                print_jailed(j);
            }
        }
        QueryCommand::Proposals => {
            let (list, h) = conn.list(query::proposals()).await?;
            if list.proposals.is_empty() {
                println!("no proposals at height {h}");
            } else {
                println!("proposals at height {h}:");
            }
            for p in list.proposals {
                print_proposal(&p);
            }
        }
    }
    Ok(())
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn print_misbehaviour(m: &pb::Misbehaviour) {
    use neurodata_abci::governance::jail::{kind_name, outcome_name};
    let who = if m.pub_key.is_empty() {
        "not a validator the chain knows".to_owned()
    } else {
        format!(
            "validator {} org {} ({}) power {}",
            b64(&m.pub_key),
            m.org_id,
            m.name,
            m.power
        )
    };
    println!(
        "  {} at height {} ({}) by {} ({who}), reported in block {}: {}",
        kind_name(m.kind),
        m.evidence_height,
        utc(m.evidence_time),
        hex::encode_upper(&m.address),
        m.reported_height,
        outcome_name(m.outcome)
    );
}

fn print_jailed(j: &pb::JailedValidator) {
    let v = j.validator.clone().unwrap_or_default();
    let operators: Vec<String> = v.operators.iter().map(hex::encode).collect();
    println!(
        "  {} org {} ({}) had power {}, operators [{}]; jailed in block {} for {} at height {}",
        b64(&v.pub_key),
        v.org_id,
        v.name,
        v.power,
        operators.join(", "),
        j.jailed_height,
        neurodata_abci::governance::jail::kind_name(j.kind),
        j.evidence_height
    );
}

/// A Unix time as an ISO 8601 UTC date and time.
fn utc(unix: i64) -> String {
    tendermint::Time::from_unix_timestamp(unix, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|_| format!("{unix} (unix seconds)"))
}

fn print_org(o: &pb::Org) {
    let status = match pb::OrgStatus::try_from(o.status) {
        Ok(pb::OrgStatus::Active) => "active",
        Ok(pb::OrgStatus::Removed) => "removed",
        _ => "unknown",
    };
    println!(
        "  {} ({}) {} ca {} admitted at {}",
        o.org_id,
        o.name,
        status,
        hex::encode(&o.ca_fingerprint),
        o.admitted_height
    );
}

fn orgs_or_none(orgs: &[String]) -> String {
    if orgs.is_empty() {
        "none".into()
    } else {
        orgs.join(", ")
    }
}

fn print_proposal(p: &pb::Proposal) {
    println!(
        "  #{} {:?} by {} [{}] approvals: {} rejections: {} voting until {}{}",
        p.id,
        p.title,
        p.proposer_org,
        status_name(p.status),
        orgs_or_none(&p.approvals),
        orgs_or_none(&p.rejections),
        p.voting_end_height,
        if p.failure.is_empty() {
            String::new()
        } else {
            format!(" failure: {}", p.failure)
        }
    );
}

fn proposal_message(cmd: ProposeCommand) -> anyhow::Result<pb::Message> {
    let (title, action) = match cmd {
        ProposeCommand::AdmitOrg { org, name, ca } => (
            format!("admit {org}"),
            A::AdmitOrg(pb::AdmitOrg {
                org_id: org,
                name,
                ca_cert_pem: String::from_utf8(read(&ca)?)?,
            }),
        ),
        ProposeCommand::RemoveOrg { org } => (
            format!("remove {org}"),
            A::RemoveOrg(pb::RemoveOrg { org_id: org }),
        ),
        ProposeCommand::RotateCa {
            org,
            ca,
            grace_secs,
        } => (
            format!("rotate CA of {org}"),
            A::RotateOrgCa(pb::RotateOrgCa {
                org_id: org,
                ca_cert_pem: String::from_utf8(read(&ca)?)?,
                grace_secs,
            }),
        ),
        ProposeCommand::SetValidator {
            pub_key,
            power,
            org,
            name,
            operators,
        } => {
            let key = neurodata_abci::genesis::decode_validator_key(&pub_key)?;
            let operators = operators
                .iter()
                .map(|o| parse_address(o).map(|a| a.0.to_vec()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            (
                format!("validator {name} power {power}"),
                A::SetValidator(pb::SetValidator {
                    pub_key: key.to_vec(),
                    power,
                    org_id: org,
                    name,
                    operators,
                }),
            )
        }
        ProposeCommand::Spend {
            from,
            to,
            amount: a,
        } => {
            let source = match from.as_str() {
                "treasury" => pb::SpendSource::Treasury,
                "reward-pool" => pb::SpendSource::RewardPool,
                other => bail!("--from must be treasury or reward-pool, got {other:?}"),
            };
            (
                format!("spend {a} from {from}"),
                A::Spend(pb::Spend {
                    source: source as i32,
                    to: parse_address(&to)?.0.to_vec(),
                    amount: amount(&a)?.to_string(),
                }),
            )
        }
        ProposeCommand::ScheduleUpgrade { name, height, info } => (
            if height == 0 {
                format!("cancel upgrade {name}")
            } else {
                format!("upgrade {name} at height {height}")
            },
            A::ScheduleUpgrade(pb::ScheduleUpgrade { name, height, info }),
        ),
        ProposeCommand::Mint { amount: a } => (
            format!("mint {a}"),
            A::Mint(pb::Mint {
                amount: amount(&a)?.to_string(),
            }),
        ),
        ProposeCommand::Params {
            min_fee,
            proposal_voting_blocks,
            max_tx_bytes,
            max_messages_per_tx,
            market,
        } => (
            "change parameters".into(),
            A::SetParams(pb::Params {
                min_fee,
                proposal_voting_blocks,
                max_tx_bytes,
                max_messages_per_tx,
                key_delivery_blocks: market.key_delivery_blocks,
                confirm_blocks: market.confirm_blocks,
                market_fee_bps: market.market_fee_bps,
                max_open_validations_per_org: market.max_open_validations_per_org,
                reward_epoch_blocks: market.reward_epoch_blocks,
                model_royalty_bps: market.model_royalty_bps,
                cert_expiry_notice_secs: market.cert_expiry_notice_days.saturating_mul(86_400),
            }),
        ),
    };
    Ok(msg::propose(&title, action))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let me = &cli.me;
    match cli.command {
        Command::Ca(CaCommand::Init {
            org,
            name,
            dir,
            days,
        }) => {
            neurodata_abci::governance::action::check_org_id(&org)?;
            let ca = OrgCa::create(&org, &name, Validity::days_from(now(), days))?;
            ca.save(&dir)?;
            println!(
                "created CA of {org} in {} (fingerprint {})",
                dir.display(),
                hex::encode(neurodata_certs::fingerprint(&ca.cert)?)
            );
        }
        Command::Ca(CaCommand::Issue {
            ca_dir,
            name,
            role,
            out,
            days,
        }) => {
            let role: Role = role.parse()?;
            let ca = OrgCa::load(&ca_dir)?;
            let member = ca.issue(&name, role, Validity::days_from(now(), days))?;
            let out = out.unwrap_or(ca_dir);
            member.save(&out, &name)?;
            println!(
                "issued {role} certificate {} in {} (address {})",
                name,
                out.display(),
                hex::encode(neurodata_certs::fingerprint(&member.cert)?)
            );
        }
        Command::Ca(CaCommand::Revoke {
            fee,
            revoked,
            reason,
        }) => {
            let der = X509::from_pem(&read(&revoked)?)?.to_der()?;
            let fp = cert_address(&revoked)?;
            let signer = SignerArgs::new(me, Some(&fee));
            submit(&signer, vec![msg::revoke(fp, Some(der), &reason)]).await?;
            println!("revoked {fp}");
        }
        Command::Ca(CaCommand::MoveIdentity {
            fee,
            from,
            to,
            reason,
        }) => {
            let from = cert_address(&from)?;
            let to_der = X509::from_pem(&read(&to)?)?.to_der()?;
            let to = cert_address(&to)?;
            submit(
                &SignerArgs::new(me, Some(&fee)),
                vec![msg::move_identity(from, to, Some(to_der), &reason)],
            )
            .await?;
            println!("moved {from} to {to}");
        }
        Command::Ca(CaCommand::Reissue {
            ca_dir,
            previous_ca,
            member,
            out,
            days,
        }) => lifecycle::reissue(&ca_dir, previous_ca.as_deref(), &member, &out, days)?,
        Command::Ca(CaCommand::Renew { fee, new_cert }) => {
            lifecycle::renew(&SignerArgs::new(me, Some(&fee)), &new_cert).await?
        }
        Command::Ca(CaCommand::Expiring { days, json }) => {
            lifecycle::expiring(&SignerArgs::new(me, None), days, json).await?
        }
        Command::Ca(CaCommand::DevConsortium { dir }) => {
            for org in neurodata_certs::dev_consortium(&dir, now())? {
                println!("wrote {}", org.display());
            }
        }
        Command::Genesis(args) => genesis(args)?,
        Command::Keys(KeysCommand::Show { cert }) => {
            let x = X509::from_pem(&read(&cert)?)?;
            let parsed = neurodata_abci::membership::MemberCertificate::parse(&x.to_der()?)?;
            println!(
                "address  {}\nsubject  {} (role {})\nissuer   {}\nvalid    {} .. {} (UTC)",
                hex::encode(parsed.fingerprint),
                parsed.common_name,
                parsed.role,
                parsed.issuer,
                utc(parsed.not_before),
                utc(parsed.not_after)
            );
        }
        Command::Tx(TxArgs { fee, message }) => {
            let signer = SignerArgs::new(me, Some(&fee));
            let msgs = match message {
                TxMessage::Transfer {
                    to,
                    amount: a,
                    allow_unregistered,
                } => {
                    let recipient = parse_address(&to)?;
                    // A certificate file names a member; a bare address may be anyone's, or
                    // nobody's: coins sent to an address no key signs for are gone.
                    let member_file = Path::new(&to).exists()
                        && X509::from_pem(&read(Path::new(&to))?)
                            .ok()
                            .and_then(|x| x.to_der().ok())
                            .is_some_and(|der| {
                                neurodata_abci::membership::MemberCertificate::parse(&der).is_ok()
                            });
                    if Path::new(&to).exists() && !member_file && !allow_unregistered {
                        bail!(
                            "{to} is not a member certificate (a CA certificate cannot sign, so \
                             coins sent to it are lost): pass the member's certificate, or \
                             --allow-unregistered if you are sure"
                        );
                    }
                    if !member_file && !allow_unregistered {
                        let conn = Conn::open(&signer.chain, signer.identity()).await?;
                        let known = conn
                            .link
                            .record(query::identity(recipient))
                            .await?
                            .is_some();
                        if !known {
                            bail!(
                                "no member has signed with address {recipient} (it has no \
                                 identity on chain), so nobody may hold its key: pass the \
                                 recipient's certificate file with --to, or \
                                 --allow-unregistered if you are sure"
                            );
                        }
                    }
                    vec![msg::transfer(recipient, amount(&a)?)]
                }
                TxMessage::Propose(p) => vec![proposal_message(p)?],
                TxMessage::Vote { proposal, reject } => proposal
                    .into_iter()
                    .map(|id| msg::vote(id, !reject))
                    .collect(),
            };
            submit(&signer, msgs).await?;
        }
        Command::Query(q) => query(q, me).await?,
        Command::Devnet(d) => devnet::run_command(d).await?,
        Command::Dataset(d) => dataset::run(d, me).await?,
        Command::Job(j) => job::run(j, me).await?,
        Command::Model(m) => model::run(m, me).await?,
        Command::Node(n) => node::run(n)?,
        Command::Leaderboard { dataset } => model::leaderboard(me, dataset).await?,
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e:#}");
        if let Some(neurodata_client::ClientError::Unreachable { .. }) = e.downcast_ref() {
            eprintln!(
                "is the node running (`ndctl devnet status`)? pass --node URL or set \
                 NEURODATA_NODE (`ndctl devnet up` prints it), or use your org's --gateway"
            );
        }
        std::process::exit(1);
    }
}
