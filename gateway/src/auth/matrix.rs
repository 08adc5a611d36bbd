//! The gateway's authorization matrix: every gRPC method the gateway serves (read from the
//! services' descriptors, so a new method shows up by itself) × every role × every certificate
//! state, judged as the guard judges a call — [`permission`] of its path, then [`verdict`] on
//! the records the chain holds, its refusal mapped by [`status`] — checked against the
//! membership rule and compared with the checked-in `docs/authz-matrix-gateway.md`. With
//! `NEURODATA_BLESS=1` the test rewrites that file instead of comparing.
//!
//! The chain's side, every message × role × state through the app, is
//! `abci-app/tests/authz_matrix.rs` and `docs/authz-matrix.md`; that both apply one rule is
//! `tests::same_verdict_as_the_chain`.

use std::collections::BTreeMap;
use std::fmt;

use neurodata_abci::governance::{GovernanceWrite, Params, ProposalAction};
use neurodata_abci::membership::{MembershipRead, MembershipWrite};
use neurodata_abci::state::{MemoryState, StateDelta};
use neurodata_abci::tx::ExecCtx;
use neurodata_certs::{OrgCa, Validity};
use prost::Message as _;

use super::*;

const TABLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/authz-matrix-gateway.md"
);

/// The time calls are judged at (the chain tip's).
const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

type State = StateDelta<MemoryState>;

/// A state a caller's certificate can be in (the same as the chain matrix's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum CertState {
    Active,
    Revoked,
    Expired,
    NotYetValid,
    OrgRemoved,
    CaRotated,
    ForeignCa,
}

impl CertState {
    const ALL: [CertState; 7] = [
        CertState::Active,
        CertState::Revoked,
        CertState::Expired,
        CertState::NotYetValid,
        CertState::OrgRemoved,
        CertState::CaRotated,
        CertState::ForeignCa,
    ];

    fn title(self) -> &'static str {
        match self {
            CertState::Active => "active",
            CertState::Revoked => "revoked",
            CertState::Expired => "expired",
            CertState::NotYetValid => "not yet valid",
            CertState::OrgRemoved => "org removed",
            CertState::CaRotated => "CA rotated out",
            CertState::ForeignCa => "foreign CA",
        }
    }

    /// The certificate each role calls with in this state.
    fn holder(self) -> &'static str {
        match self {
            CertState::Active => {
                "issued by its org's current CA, registered by an earlier tx, within its \
                 validity, not revoked"
            }
            CertState::Revoked => "registered, then revoked by its org's admin",
            CertState::Expired => "registered while valid; its notAfter is before the tip's time",
            CertState::NotYetValid => "never used; its notBefore is after the tip's time",
            CertState::OrgRemoved => "registered, then its org removed by governance",
            CertState::CaRotated => {
                "registered, then its org's CA rotated by governance (it is the old CA's)"
            }
            CertState::ForeignCa => "never used; issued by a CA no org was admitted with",
        }
    }

    /// The membership rule's refusal of a caller in this state, whatever it calls (None: it is
    /// a member, and its role decides).
    fn refusal(self) -> Option<MembershipError> {
        let s = String::new;
        match self {
            CertState::Active => None,
            CertState::Revoked => Some(MembershipError::Revoked {
                fingerprint: s(),
                height: 0,
            }),
            CertState::Expired => Some(MembershipError::Expired {
                not_after: 0,
                block_time: 0,
            }),
            CertState::NotYetValid => Some(MembershipError::NotYetValid {
                not_before: 0,
                block_time: 0,
            }),
            CertState::OrgRemoved => Some(MembershipError::OrgNotActive { org: s() }),
            CertState::CaRotated => Some(MembershipError::CaRotated { org: s() }),
            CertState::ForeignCa => Some(MembershipError::UnknownCa { issuer: s() }),
        }
    }
}

fn role_refusal() -> MembershipError {
    MembershipError::RoleNotAllowed {
        role: String::new(),
        message: "",
        allowed: String::new(),
    }
}

/// The variant's name, for the legend.
fn variant(e: &MembershipError) -> String {
    format!("{e:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What the guard does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// No certificate asked (health, reflection).
    Public,
    /// Passed on to the service, which may still refuse by its own rules.
    Admitted,
    /// Refused with the rule's error, as a status with that gRPC code.
    Refused { code: u32, grpc: Code },
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Public => f.write_str("public"),
            Cell::Admitted => f.write_str("admitted"),
            // The status is the legend's: the rule's error decides it.
            Cell::Refused { code, .. } => write!(f, "refused:membership/{code}"),
        }
    }
}

/// Whether `cell` is what the membership rule says for a caller in `state` with `role` calling a
/// method that asks `permission`: nothing for a public method; else the state's refusal, else
/// the role's, else admitted; a refusal with the status [`status`] gives it.
fn follows_the_rule(
    cell: Cell,
    state: CertState,
    role: Role,
    permission: Option<Permission<'_>>,
) -> bool {
    let Some(permission) = permission else {
        return cell == Cell::Public;
    };
    let refusal = state
        .refusal()
        .or_else(|| (!permission.roles.contains(&role)).then(role_refusal));
    match (refusal, cell) {
        (Some(e), Cell::Refused { code, grpc }) => (code, grpc) == (e.code(), status(&e).code()),
        (None, Cell::Admitted) => true,
        _ => false,
    }
}

/// Every method of every gRPC service the gateway serves: its own services, health and
/// reflection (v1, the one `Gateway::serve` registers), as request paths.
fn methods() -> Vec<String> {
    let mut paths = Vec::new();
    for set in [
        neurodata_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set).unwrap();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths
}

fn ctx(height: u64) -> ExecCtx {
    ExecCtx {
        height,
        time: NOW - 10 * DAY + height as i64,
        params: Params::default(),
    }
}

fn govern(state: &mut State, height: u64, action: ProposalAction) {
    action.execute(state, &ctx(height), 0).unwrap();
}

fn pem(ca: &OrgCa) -> String {
    String::from_utf8(ca.cert.to_pem().unwrap()).unwrap()
}

/// One certificate per role.
fn each_role(ca: &OrgCa, validity: Validity) -> BTreeMap<Role, Vec<u8>> {
    Role::ALL
        .map(|r| {
            let m = ca.issue(&format!("{r}-matrix"), r, validity).unwrap();
            (r, m.cert.to_der().unwrap())
        })
        .into()
}

/// Registers a certificate as its first tx would.
fn register(state: &mut State, der: &[u8]) {
    let identity = MemberCertificate::parse(der)
        .unwrap()
        .register(&*state, NOW - 10 * DAY + 2, 2)
        .unwrap();
    state.put_identity(&identity).unwrap();
}

/// The chain's state after its history, and the certificate of each role in each state.
fn world() -> (State, BTreeMap<(CertState, Role), Vec<u8>>) {
    let ca_validity = Validity::days_from(NOW, 3650);
    let ok = Validity::days_from(NOW, 30);
    let ca = |id: &str| OrgCa::create(id, id, ca_validity).unwrap();
    let mut state = StateDelta::new(MemoryState::default());

    // Height 1: governance admits three orgs; medlab runs the only validator.
    let (medlab, acme, bio) = (ca("medlab"), ca("acme"), ca("bio"));
    for (org_id, ca) in [("medlab", &medlab), ("acme", &acme), ("bio", &bio)] {
        govern(
            &mut state,
            1,
            ProposalAction::AdmitOrg {
                org_id: org_id.into(),
                name: org_id.into(),
                ca_cert_pem: pem(ca),
            },
        );
    }
    state.put_validator(
        &[7; 32],
        &pb::Validator {
            pub_key: vec![7; 32],
            power: 10,
            org_id: "medlab".into(),
            ..Default::default()
        },
    );

    // Height 2: members register (their first tx); medlab's admin revokes.
    let mut certs = BTreeMap::new();
    let mut put = |state: CertState, each: BTreeMap<Role, Vec<u8>>| {
        for (role, der) in each {
            certs.insert((state, role), der);
        }
    };
    put(CertState::Active, each_role(&medlab, ok));
    put(CertState::Revoked, each_role(&medlab, ok));
    put(
        CertState::Expired,
        each_role(
            &medlab,
            Validity {
                not_before: NOW - 20 * DAY,
                not_after: NOW - 1,
            },
        ),
    );
    put(
        CertState::NotYetValid,
        each_role(
            &medlab,
            Validity {
                not_before: NOW + 1,
                not_after: NOW + DAY,
            },
        ),
    );
    put(CertState::OrgRemoved, each_role(&acme, ok));
    put(CertState::CaRotated, each_role(&bio, ok));
    put(CertState::ForeignCa, each_role(&ca("rogue"), ok));
    for ((cert_state, _), der) in &certs {
        let registered = !matches!(cert_state, CertState::NotYetValid | CertState::ForeignCa);
        if registered {
            register(&mut state, der);
        }
        if *cert_state == CertState::Revoked {
            state.put_revocation(&pb::Revocation {
                fingerprint: openssl::sha::sha256(der).to_vec(),
                org_id: "medlab".into(),
                reason: "matrix".into(),
                height: 2,
                revoked_by: vec![],
            });
        }
    }

    // Height 3: acme is removed, bio's CA rotated.
    govern(
        &mut state,
        3,
        ProposalAction::RemoveOrg {
            org_id: "acme".into(),
        },
    );
    govern(
        &mut state,
        3,
        ProposalAction::RotateOrgCa {
            org_id: "bio".into(),
            ca_cert_pem: pem(&ca("bio")),
            // No grace: the old CA's certificates are refused from the next block on.
            grace_secs: 0,
        },
    );
    (state, certs)
}

type Results = BTreeMap<(CertState, String, Role), Cell>;

fn render(paths: &[String], results: &Results) -> String {
    let names: BTreeMap<u32, String> = CertState::ALL
        .iter()
        .filter_map(|s| s.refusal())
        .chain([role_refusal()])
        .map(|e| (e.code(), variant(&e)))
        .collect();
    // Each refusal's status, as the cells got it.
    let mut codes: BTreeMap<u32, std::collections::BTreeSet<String>> = BTreeMap::new();
    for cell in results.values() {
        if let Cell::Refused { code, grpc } = cell {
            codes.entry(*code).or_default().insert(format!("{grpc:?}"));
        }
    }
    let mut out = String::from(
        "# Authorization matrix: gateway calls\n\
         \n\
         <!-- Generated by gateway/src/auth/matrix.rs; do not edit by hand. -->\n\
         \n\
         Every gRPC method the gateway serves, called by a member of each role whose \
         certificate is in\neach state, judged as the gateway's guard judges every call: the \
         chain's membership rule on\nthe chain's records, at the chain tip's time. A cell says \
         what the guard does:\n\
         \n\
         - `public`: no certificate asked (health, reflection).\n\
         - `admitted`: the call goes on to its service, which applies its own rules (and the \
         chain\n  judges every tx it relays: [authz-matrix.md](authz-matrix.md)).\n\
         - `refused:membership/<code>`: refused with the chain's error for the same reason, as \
         a gRPC\n  status with its message and this code:\n",
    );
    for (code, grpc) in &codes {
        let grpc: Vec<&str> = grpc.iter().map(String::as_str).collect();
        out += &format!(
            "  - `membership/{code}`: {}, {}\n",
            names.get(code).map_or("?", String::as_str),
            grpc.join(" or ")
        );
    }
    out += "\n\
        The test checks every cell against the membership rule and this file against the \
        cells. After\nchanging a method, its roles or the rule, regenerate it and review the \
        diff:\n\
        \n\
        \x20   NEURODATA_BLESS=1 cargo test -p neurodata-gateway --lib auth::matrix\n";
    let header: Vec<String> = std::iter::once("method".to_owned())
        .chain(Role::ALL.iter().map(|r| r.to_string()))
        .collect();
    for state in CertState::ALL {
        out += &format!(
            "\n## {}\n\nCertificate: {}.\n\n",
            state.title(),
            state.holder()
        );
        let rows: Vec<Vec<String>> = paths
            .iter()
            .map(|path| {
                std::iter::once(format!("`{path}`"))
                    .chain(
                        Role::ALL
                            .iter()
                            .map(|r| results[&(state, path.clone(), *r)].to_string()),
                    )
                    .collect()
            })
            .collect();
        out += &markdown_table(&header, &rows);
    }
    out
}

/// A markdown table with padded columns, so the file reads as a table in plain text too.
fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.to_vec());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

/// The lines that differ between `old` and `new` (a longest-common-subsequence diff), each with
/// the section it is in.
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let sections = |lines: &[&str]| -> Vec<String> {
        let mut current = String::new();
        lines
            .iter()
            .map(|l| {
                if let Some(s) = l.strip_prefix("## ") {
                    current = s.to_owned();
                }
                current.clone()
            })
            .collect()
    };
    let (sa, sb) = (sections(&a), sections(&b));
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("- [{}] {}\n", sa[i], a[i]);
            i += 1;
        } else {
            out += &format!("+ [{}] {}\n", sb[j], b[j]);
            j += 1;
        }
    }
    out
}

#[test]
fn every_method_role_and_certificate_state_is_judged_as_the_checked_in_matrix_says() {
    let (state, certs) = world();
    let orgs = state.orgs().unwrap();
    let paths = methods();
    assert!(
        paths.contains(&UPLOAD.to_owned()),
        "the descriptors list the gateway's methods: {paths:?}"
    );
    let mut results = Results::new();
    let mut broken = Vec::new();
    for cert_state in CertState::ALL {
        for role in Role::ALL {
            let der = &certs[&(cert_state, role)];
            let fingerprint = openssl::sha::sha256(der);
            // What `Membership::fetch` reads from the chain for this certificate.
            let records = Records {
                identity: state.identity(&fingerprint).unwrap(),
                revocation: state.revocation(&fingerprint).unwrap(),
            };
            for path in &paths {
                let asked = permission(path);
                let cell = match asked {
                    None => Cell::Public,
                    Some(p) => match verdict(der, &orgs, &records, NOW, p) {
                        Ok(_) => Cell::Admitted,
                        Err(e) => Cell::Refused {
                            code: e.code(),
                            grpc: status(&e).code(),
                        },
                    },
                };
                if !follows_the_rule(cell, cert_state, role, asked) {
                    broken.push(format!(
                        "{path} by a {role} ({}): {cell}",
                        cert_state.title()
                    ));
                }
                results.insert((cert_state, path.clone(), role), cell);
            }
        }
    }
    assert!(
        broken.is_empty(),
        "cells against the membership rule:\n{}",
        broken.join("\n")
    );

    let rendered = render(&paths, &results);
    if std::env::var("NEURODATA_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(TABLE, &rendered).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(TABLE).unwrap_or_default();
    assert!(
        checked_in == rendered,
        "docs/authz-matrix-gateway.md differs from what the gateway decides (- file, + now); \
         if the change is intended, rerun with NEURODATA_BLESS=1 and commit the file:\n{}",
        diff(&checked_in, &rendered)
    );
}
