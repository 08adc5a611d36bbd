//! What NeuroData's fuzz targets share: a byte cursor to read structured inputs from libFuzzer's
//! bytes, the fixtures (a fixed org CA, five small trained models) and the seed corpora.
//!
//! Each target in `fuzz_targets/` asserts properties of one untrusted-input path (see its doc
//! comment); `scripts/fuzz.sh` builds and runs them. Seeds: every target writes its own seed
//! inputs, and [`ensure_fixtures`] the fixtures, when started with `NEURODATA_FUZZ_SEEDS=<dir>`
//! (`scripts/fuzz.sh --seeds` does this for every target and commits nothing itself).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use neurodata_abci::tx::EnvelopeLimits;
use neurodata_certs::{OrgCa, Role, Validity};
use neurodata_proto::chain::v1 as pb;
use prost::Message as _;

pub mod seeds;

/// The block time every target judges certificates at (2027-01-15).
pub const NOW: i64 = 1_800_000_000;
/// The chain id of the fuzzed txs.
pub const CHAIN_ID: &str = "neurodata-fuzz";
/// The org the fixture CA is the root of.
pub const ORG: &str = "fuzzlab";

/// Reads a fuzzer's bytes as a structured input; past the end every read is zero, so every
/// input is valid and short inputs are the simple cases.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next byte as a signed one.
    pub fn i8(&mut self) -> i8 {
        self.u8() as i8
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// In seed mode (`NEURODATA_FUZZ_SEEDS=<dir>` set), makes the fixtures, writes `make()`'s seeds
/// into `<dir>` and exits; otherwise does nothing. Called from each target's `init`.
pub fn seed_mode(target: &str, make: fn() -> Vec<(String, Vec<u8>)>) {
    let Some(dir) = std::env::var_os("NEURODATA_FUZZ_SEEDS") else {
        return;
    };
    ensure_fixtures();
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("seed directory");
    let seeds = make();
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
    eprintln!("{target}: {} seed(s) written to {}", seeds.len(), dir.display());
    std::process::exit(0);
}

/// `fuzz/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn missing(what: &Path) -> ! {
    panic!(
        "fixture {} is missing: run `scripts/fuzz.sh --seeds` to make the fixtures",
        what.display()
    )
}

/// The fixture org CA (`fixtures/ca/ca.pem`, `ca.key`): committed, so that the seed
/// certificates it issued verify in every run.
pub fn ca() -> &'static OrgCa {
    static CA: OnceLock<OrgCa> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = fixtures_dir().join("ca");
        OrgCa::load(&dir).unwrap_or_else(|_| missing(&dir))
    })
}

/// The org record of `ca` as the chain holds it: active, `ca` its current root.
pub fn org_record(org_id: &str, ca: &OrgCa) -> pb::Org {
    let der = ca.cert.to_der().expect("CA DER");
    pb::Org {
        org_id: org_id.into(),
        ca_fingerprint: sha256(&der).to_vec(),
        ca_cert_der: der,
        status: pb::OrgStatus::Active as i32,
        ..Default::default()
    }
}

/// The limits the tx targets decode with.
pub fn tx_limits() -> EnvelopeLimits {
    EnvelopeLimits {
        chain_id: CHAIN_ID.into(),
        max_tx_bytes: 1 << 20,
        max_messages: 8,
    }
}

/// SHA-256.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(bytes)
}

/// The fixture models: (name, job spec's `model`, target kind).
pub const MODELS: [(&str, &str, Target); 5] = [
    (
        "mlp_logistic",
        r#"{"algorithm":"mlp","task":"classification","hidden":[8],"activation":"tanh"}"#,
        Target::TwoClasses,
    ),
    (
        "mlp_softmax",
        r#"{"algorithm":"mlp","task":"classification","hidden":[6,4],"activation":"relu"}"#,
        Target::ThreeClasses,
    ),
    (
        "linear",
        r#"{"algorithm":"linear_regression"}"#,
        Target::Number,
    ),
    (
        "tree_classifier",
        r#"{"algorithm":"decision_tree","task":"classification","max_depth":4}"#,
        Target::ThreeClasses,
    ),
    (
        "tree_regressor",
        r#"{"algorithm":"decision_tree","task":"regression","max_depth":4}"#,
        Target::Number,
    ),
];

/// What a fixture model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Two classes (a logistic output).
    TwoClasses,
    /// Three classes (softmax).
    ThreeClasses,
    /// A number.
    Number,
}

/// The model file of fixture `name` (`fixtures/models/<name>.safetensors`), read once.
pub fn model_bytes(name: &str) -> &'static [u8] {
    static FILES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    let files = FILES.get_or_init(|| {
        MODELS
            .iter()
            .map(|(name, _, _)| {
                let path = fixtures_dir()
                    .join("models")
                    .join(format!("{name}.safetensors"));
                (*name, std::fs::read(&path).unwrap_or_else(|_| missing(&path)))
            })
            .collect()
    });
    files
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| bytes.as_slice())
        .unwrap_or_else(|| panic!("no fixture model {name}"))
}

/// Synthetic heart-like rows (header `age,sex,cp,chol,target`) from `seed`.
pub fn rows(rows: usize, seed: u64, target: Target) -> String {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
    let mut next = move || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        s >> 33
    };
    let mut out = String::from("age,sex,cp,chol,target\n");
    for _ in 0..rows {
        let age = 30 + next() % 50;
        let sex = ["F", "M"][(next() % 2) as usize];
        let cp = ["typical", "atypical", "asymptomatic"][(next() % 3) as usize];
        let chol = 150.0 + (next() % 2000) as f64 / 10.0;
        let z = (age as f64 - 55.0) / 10.0
            + if cp == "asymptomatic" { 1.0 } else { -0.5 }
            + if sex == "M" { 0.5 } else { 0.0 }
            + (next() % 100) as f64 / 50.0
            - 1.0;
        let target = match target {
            Target::TwoClasses => u8::from(z > 0.0).to_string(),
            Target::ThreeClasses => ["low", "mid", "high"][usize::from(z > -0.5) + usize::from(z > 0.8)].into(),
            Target::Number => format!("{:.3}", 100.0 + 10.0 * z + chol / 20.0),
        };
        out.push_str(&format!("{age},{sex},{cp},{chol},{target}\n"));
    }
    out
}

/// Makes the fixtures that are missing: the org CA and the trained models. Existing ones are
/// kept (the committed seeds were made with them).
pub fn ensure_fixtures() {
    let dir = fixtures_dir();
    let ca_dir = dir.join("ca");
    if !ca_dir.join("ca.pem").exists() {
        std::fs::create_dir_all(&ca_dir).expect("fixtures/ca");
        OrgCa::create(ORG, "Fuzz Lab", Validity::days_from(NOW, 3650))
            .and_then(|ca| ca.save(&ca_dir))
            .expect("fixture CA");
    }
    let models = dir.join("models");
    std::fs::create_dir_all(&models).expect("fixtures/models");
    for (name, model, target) in MODELS {
        let file = models.join(format!("{name}.safetensors"));
        if file.exists() {
            continue;
        }
        let target_type = if target == Target::Number {
            "numeric"
        } else {
            "categorical"
        };
        let spec = format!(
            r#"{{"schema":{{"columns":[{{"name":"age","type":"numeric"}},
                {{"name":"sex","type":"categorical"}},{{"name":"cp","type":"categorical"}},
                {{"name":"chol","type":"numeric"}},{{"name":"target","type":"{target_type}"}}],
                "target":"target"}},"model":{model},"seed":5,"test_fraction":0.2,
                "training":{{"epochs":8,"batch_size":16,"optimizer":{{"kind":"adam","lr":0.02}}}},
                "checkpoint_every":1000}}"#
        );
        let spec = neurodata_trainer::JobSpec::from_json(&spec).expect("fixture spec");
        let work = std::env::temp_dir().join(format!("neurodata-fuzz-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&work).expect("work dir");
        let data = work.join("train.csv");
        std::fs::write(&data, rows(240, 1, target)).expect("write data");
        let out = work.join("out");
        neurodata_trainer::job::run(&spec, &data, &out, &mut neurodata_trainer::job::Quiet)
            .expect("fixture trains");
        std::fs::copy(out.join("model.safetensors"), &file).expect("copy model");
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// A member certificate of the fixture CA, valid at [`NOW`].
pub fn member(role: Role) -> neurodata_certs::Member {
    ca().issue(
        &format!("{role}@{ORG}"),
        role,
        Validity::days_from(NOW, 365),
    )
    .expect("issue")
}

/// Encodes a message.
pub fn encode<M: prost::Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

/// `pb::Tx` bytes of `body` signed by `key` (low S, as the client signs).
pub fn sign_tx(body: &pb::TxBody, key: &openssl::pkey::PKeyRef<openssl::pkey::Private>) -> Vec<u8> {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::EcGroup;
    use openssl::ecdsa::EcdsaSig;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    let body = body.encode_to_vec();
    let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), key).expect("signer");
    let der = signer.sign_oneshot_to_vec(&body).expect("sign");
    let sig = EcdsaSig::from_der(&der).expect("sig");
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
    let mut ctx = BigNumContext::new().expect("ctx");
    let mut order = BigNum::new().expect("bn");
    group.order(&mut order, &mut ctx).expect("order");
    let mut half = BigNum::new().expect("bn");
    half.rshift1(&order).expect("half");
    let signature = if sig.s() <= &*half {
        der
    } else {
        let mut s = BigNum::new().expect("bn");
        s.checked_sub(&order, sig.s()).expect("n - s");
        EcdsaSig::from_private_components(sig.r().to_owned().expect("r"), s)
            .and_then(|s| s.to_der())
            .expect("low-S DER")
    };
    pb::Tx { body, signature }.encode_to_vec()
}
