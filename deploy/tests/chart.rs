//! The Helm chart `helm/neurodata` against helm itself, the binaries it runs and a real control
//! plane (`neurodata-kube-testenv`: etcd, kube-apiserver, controller-manager, scheduler, kwok).
//!
//! - `helm lint` of the chart, alone and with each value set of `ci/`;
//! - `helm template` of each value set: the objects each set asks for and no others, the worker
//!   runner's Role exactly as `worker/src/kube_runner.rs` needs it, every pod and container locked
//!   down, standard labels on every object;
//! - every container's command line against the `--help` of the binary it runs, and the rendered
//!   `config.toml` / `gateway.toml` keys against CometBFT's own config and the gateway's `Config`;
//! - the schema refusing the bad value files of `ci/bad/`, naming the bad field;
//! - `helm install --wait` of each value set (PersistentVolumes pre-bound to the chart's claims,
//!   since no provisioner runs) and a `helm upgrade` whose change reaches the API server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use neurodata_kube_testenv::{Cluster, cluster, workspace_root};
use serde_yaml::Value;

/// The value sets a release of the chart is installed with.
const SETS: [&str; 4] = [
    "validator-only",
    "member",
    "everything-s3",
    "validator-verifier-k8s",
];

/// The rules of the worker's Kubernetes runner: the runner's own list, as RBAC rules.
fn runner_rules() -> Value {
    let rules: Vec<serde_json::Value> = neurodata_worker::kube_runner::RBAC_RULES
        .iter()
        .map(|(group, resource, verbs)| {
            serde_json::json!({"apiGroups": [group], "resources": [resource], "verbs": verbs})
        })
        .collect();
    serde_yaml::to_value(rules).expect("rules as YAML")
}

fn chart_dir() -> PathBuf {
    workspace_root().join("helm/neurodata")
}

fn values(set: &str) -> PathBuf {
    chart_dir().join("ci").join(format!("{set}.yaml"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs helm, panics with its stderr unless it succeeds; returns stdout.
fn helm(c: &Cluster, args: &[&str]) -> String {
    let out = output(c.helm().args(args));
    assert!(
        out.status.success(),
        "helm {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The objects `helm template` renders for a value set, in namespace `ns`.
fn render(c: &Cluster, set: &str, ns: &str) -> Vec<Value> {
    let chart = chart_dir();
    let values = values(set);
    let text = helm(
        c,
        &[
            "template",
            "nd",
            path_str(&chart),
            "--namespace",
            ns,
            "-f",
            path_str(&values),
        ],
    );
    // helm separates documents with a line `---`; comments and empty documents are dropped.
    text.split("\n---")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("helm template prints YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("the workspace path is UTF-8")
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for k in path {
        cur = &cur[*k];
    }
    cur.as_str().unwrap_or("")
}

fn kind_name(o: &Value) -> (String, String) {
    (
        s(o, &["kind"]).to_owned(),
        s(o, &["metadata", "name"]).to_owned(),
    )
}

fn names(objects: &[Value]) -> BTreeSet<(String, String)> {
    objects.iter().map(kind_name).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind_name(o) == (kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("{kind} {name} is not rendered; have {:?}", names(objects)))
}

/// The pod spec of a workload, if the object has one.
fn pod_spec(o: &Value) -> Option<&Value> {
    let spec = &o["spec"]["template"]["spec"];
    spec.is_mapping().then_some(spec)
}

/// Every container and init container of a pod spec, with whether it is an init container.
fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_sequence())
        .flatten()
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|seq| {
            seq.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lint_accepts_the_chart_and_every_value_set() {
    let c = cluster();
    let chart = chart_dir();
    helm(c, &["lint", "--strict", path_str(&chart)]);
    for set in SETS {
        let values = values(set);
        helm(
            c,
            &[
                "lint",
                "--strict",
                path_str(&chart),
                "-f",
                path_str(&values),
            ],
        );
    }
}

#[test]
fn each_value_set_renders_its_components_and_no_others() {
    let c = cluster();
    let has = |objects: &[Value], kind: &str, name: &str| {
        names(objects).contains(&(kind.to_owned(), name.to_owned()))
    };

    let v = render(c, "validator-only", "medlab");
    for (kind, name) in [
        ("StatefulSet", "nd-neurodata-validator"),
        ("PodDisruptionBudget", "nd-neurodata-validator"),
        ("ConfigMap", "nd-neurodata-validator"),
        ("Service", "nd-neurodata-validator-headless"),
        ("Service", "nd-neurodata-validator-0-p2p"),
        ("NetworkPolicy", "nd-neurodata-validator"),
        ("ServiceAccount", "nd-neurodata-validator"),
    ] {
        assert!(has(&v, kind, name), "validator-only: no {kind} {name}");
    }
    for kind in [
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceMonitor",
        "PersistentVolumeClaim",
    ] {
        assert!(
            v.iter().all(|o| s(o, &["kind"]) != kind),
            "validator-only renders a {kind}: {:?}",
            names(&v)
        );
    }
    assert!(
        !has(&v, "Service", "nd-neurodata-validator-rpc"),
        "the RPC Service is off by default"
    );
    let sts = find(&v, "StatefulSet", "nd-neurodata-validator");
    let spec = pod_spec(sts).expect("the StatefulSet has a pod template");
    let names_of = |k: &str| -> Vec<String> {
        spec[k]
            .as_sequence()
            .map(|cs| cs.iter().map(|c| s(c, &["name"]).to_owned()).collect())
            .unwrap_or_default()
    };
    assert_eq!(names_of("containers"), ["abci", "cometbft"]);
    assert_eq!(names_of("initContainers"), ["state-init"]);
    let claims: Vec<&str> = sts["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .map(|t| t.iter().map(|c| s(c, &["metadata", "name"])).collect())
        .unwrap_or_default();
    assert_eq!(claims, ["cometbft-data", "app-data"]);
    let toml = s(
        find(&v, "ConfigMap", "nd-neurodata-validator"),
        &["data", "config.toml"],
    );
    for line in [
        "proxy_app = \"unix:///sock/abci.sock\"",
        "moniker = \"medlab-validator\"",
        "laddr = \"tcp://0.0.0.0:26656\"",
        "laddr = \"tcp://0.0.0.0:26657\"",
        "persistent_peers = \"3c1f4a7e9b0d2c5f8a1e4b7d0c3f6a9e2b5d8c1f@validator-0.healthtech.example.org:26656,7e2b9d4c1a6f3e8b5d0c7a2f9e4b1d6c3a8f5e0b@validator-0.datacorp.example.org:26656\"",
    ] {
        assert!(toml.contains(line), "config.toml lacks {line:?}:\n{toml}");
    }

    let m = render(c, "member", "healthtech");
    for (kind, name) in [
        ("Deployment", "nd-neurodata-gateway"),
        ("Deployment", "nd-neurodata-worker"),
        ("Service", "nd-neurodata-gateway"),
        ("ConfigMap", "nd-neurodata-gateway"),
        ("PersistentVolumeClaim", "nd-neurodata-gateway"),
        ("PersistentVolumeClaim", "nd-neurodata-worker-work"),
        ("Role", "nd-neurodata-worker-runner"),
        ("RoleBinding", "nd-neurodata-worker-runner"),
        ("ServiceAccount", "nd-neurodata-worker"),
        ("NetworkPolicy", "nd-neurodata-gateway"),
        ("NetworkPolicy", "nd-neurodata-worker"),
    ] {
        assert!(has(&m, kind, name), "member: no {kind} {name}");
    }
    for kind in ["StatefulSet", "PodDisruptionBudget", "ServiceMonitor"] {
        assert!(
            m.iter().all(|o| s(o, &["kind"]) != kind),
            "member renders a {kind}"
        );
    }
    let role = find(&m, "Role", "nd-neurodata-worker-runner");
    let want = runner_rules();
    assert_eq!(
        role["rules"], want,
        "the worker's Role must be exactly the runner's rules"
    );
    let work = find(&m, "PersistentVolumeClaim", "nd-neurodata-worker-work");
    assert_eq!(strings(&work["spec"]["accessModes"]), ["ReadWriteMany"]);
    let gw = s(
        find(&m, "ConfigMap", "nd-neurodata-gateway"),
        &["data", "gateway.toml"],
    );
    for line in [
        "node_rpc = \"http://rpc.medlab.example.org:26657\"",
        "org_id = \"healthtech\"",
        "blob_dir = \"/var/lib/neurodata/gateway/blobs\"",
        "delivery_cert = \"/etc/neurodata/delivery/tls.crt\"",
    ] {
        assert!(gw.contains(line), "gateway.toml lacks {line:?}:\n{gw}");
    }
    assert!(!gw.contains("s3_bucket"), "pvc blob store: no bucket");
    let worker = find(&m, "Deployment", "nd-neurodata-worker");
    let args = strings(&pod_spec(worker).expect("pod template")["containers"][0]["args"]);
    for pair in [
        ["--runner", "kubernetes"],
        ["--k8s-work-claim", "nd-neurodata-worker-work"],
        ["--k8s-cpu", "2"],
        ["--k8s-ttl-seconds", "300"],
        [
            "--gateway",
            "https://nd-neurodata-gateway.healthtech.svc:50051",
        ],
        [
            "--k8s-gateway-selector",
            "app.kubernetes.io/component=gateway,app.kubernetes.io/instance=nd,app.kubernetes.io/name=neurodata",
        ],
        [
            "--k8s-pod-annotation",
            "cluster-autoscaler.kubernetes.io/safe-to-evict=false",
        ],
    ] {
        assert!(
            args.windows(2).any(|w| w == pair),
            "worker args lack {pair:?}: {args:?}"
        );
    }

    let e = render(c, "everything-s3", "datacorp");
    for (kind, name) in [
        ("StatefulSet", "nd-neurodata-validator"),
        ("PodDisruptionBudget", "nd-neurodata-validator"),
        ("Service", "nd-neurodata-validator-0-p2p"),
        ("Service", "nd-neurodata-validator-1-p2p"),
        ("Service", "nd-neurodata-validator-rpc"),
        ("ConfigMap", "nd-neurodata-genesis"),
        ("Deployment", "nd-neurodata-gateway"),
        ("Deployment", "nd-neurodata-worker"),
        ("Role", "nd-neurodata-worker-runner"),
        ("ServiceMonitor", "nd-neurodata"),
        ("Service", "nd-neurodata-gateway-metrics"),
        ("Service", "nd-neurodata-validator-metrics"),
    ] {
        assert!(has(&e, kind, name), "everything-s3: no {kind} {name}");
    }
    let sts = find(&e, "StatefulSet", "nd-neurodata-validator");
    let spec = pod_spec(sts).expect("pod template");
    let cs: Vec<&str> = spec["containers"]
        .as_sequence()
        .map(|c| c.iter().map(|c| s(c, &["name"])).collect())
        .unwrap_or_default();
    assert_eq!(
        cs,
        ["abci", "cometbft", "verifier"],
        "the verifier shares the validator's pod"
    );
    let abci = strings(&spec["containers"][0]["args"]);
    let verifier = strings(&spec["containers"][2]["args"]);
    let flag = |args: &[String], f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        flag(&abci, "--verdicts"),
        flag(&verifier, "--verdicts"),
        "abci-app and verifier must use one verdict inbox"
    );
    assert_eq!(
        flag(&abci, "--validator-key"),
        flag(&verifier, "--validator-key")
    );
    let gw = s(
        find(&e, "ConfigMap", "nd-neurodata-gateway"),
        &["data", "gateway.toml"],
    );
    for line in [
        "s3_bucket = \"datacorp-neurodata-blobs\"",
        "s3_endpoint = \"http://minio.storage.svc:9000\"",
        "s3_region = \"eu-west-1\"",
        "node_rpc = \"http://nd-neurodata-validator-rpc.datacorp.svc:26657\"",
        "deliver_validation_keys = true",
    ] {
        assert!(gw.contains(line), "gateway.toml lacks {line:?}:\n{gw}");
    }
    let gateway = find(&e, "Deployment", "nd-neurodata-gateway");
    let env =
        serde_yaml::to_string(&pod_spec(gateway).expect("pod template")["containers"][0]["env"])
            .unwrap_or_default();
    assert!(
        env.contains("AWS_SECRET_ACCESS_KEY") && env.contains("datacorp-s3"),
        "S3 credentials come from the Secret: {env}"
    );
    let np = find(&e, "NetworkPolicy", "nd-neurodata-gateway");
    assert!(
        serde_yaml::to_string(&np["spec"]["egress"])
            .unwrap_or_default()
            .contains("port: 9000"),
        "the gateway may reach its S3 endpoint's port"
    );

    // A verifier on the Kubernetes runner: its re-executions are Jobs, with the runner's Role,
    // a ReadWriteMany work volume and a scratch volume of its own for the plaintext.
    let k = render(c, "validator-verifier-k8s", "genomics");
    let role = find(&k, "Role", "nd-neurodata-verifier-runner");
    assert_eq!(role["rules"], runner_rules());
    let work = find(&k, "PersistentVolumeClaim", "nd-neurodata-verifier-work");
    assert_eq!(strings(&work["spec"]["accessModes"]), ["ReadWriteMany"]);
    let sts = find(&k, "StatefulSet", "nd-neurodata-validator");
    let spec = pod_spec(sts).expect("pod template");
    // The runner's token reaches the verifier container only, not CometBFT's or the app's.
    assert_eq!(spec["automountServiceAccountToken"], Value::Bool(false));
    let token_mounts: Vec<String> = spec["containers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["volumeMounts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|m| s(m, &["name"]) == "kube-api-access")
        })
        .map(|c| s(c, &["name"]).to_owned())
        .collect();
    assert_eq!(token_mounts, ["verifier"]);
    let verifier = strings(&spec["containers"][2]["args"]);
    assert_eq!(flag(&verifier, "--runner"), "kubernetes");
    assert_eq!(
        flag(&verifier, "--k8s-work-claim"),
        "nd-neurodata-verifier-work"
    );
    assert_eq!(
        flag(&verifier, "--scratch"),
        "/var/lib/neurodata/verifier-scratch"
    );
    assert_ne!(flag(&verifier, "--state"), flag(&verifier, "--scratch"));
}

#[test]
fn every_object_is_labelled_and_every_container_locked_down() {
    let c = cluster();
    for set in SETS {
        let objects = render(c, set, "labels");
        for o in &objects {
            let labels = &o["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by",
                "helm.sh/chart",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{set}: {:?} has no label {key}",
                    kind_name(o)
                );
            }
            let Some(spec) = pod_spec(o) else { continue };
            let pod = &spec["securityContext"];
            assert_eq!(
                pod["runAsNonRoot"],
                Value::Bool(true),
                "{set}: {:?}",
                kind_name(o)
            );
            assert_eq!(s(pod, &["seccompProfile", "type"]), "RuntimeDefault");
            for container in containers(spec) {
                let who = format!(
                    "{set}: {:?} container {}",
                    kind_name(o),
                    s(container, &["name"])
                );
                let sc = &container["securityContext"];
                assert_eq!(sc["runAsNonRoot"], Value::Bool(true), "{who}");
                assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{who}");
                assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{who}");
                assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{who}");
                assert_eq!(
                    s(sc, &["seccompProfile", "type"]),
                    "RuntimeDefault",
                    "{who}"
                );
                let res = &container["resources"];
                assert!(
                    res["requests"]["cpu"].is_string() && res["limits"]["memory"].is_string(),
                    "{who}: resources from values: {res:?}"
                );
            }
        }
    }
}

/// Where the binaries are: NEURODATA_BIN_DIR, or cargo's debug output of this workspace.
fn bin_dir() -> PathBuf {
    std::env::var_os("NEURODATA_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("debug")))
        .unwrap_or_else(|| workspace_root().join("target/debug"))
}

fn binary(name: &str) -> PathBuf {
    if name == "cometbft" {
        if let Some(p) = std::env::var_os("NEURODATA_COMETBFT") {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        return home.join(".cache/neurodata/bin/cometbft-v0.38.26");
    }
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build it (cargo build -p neurodata-abci -p neurodata-gateway -p \
         neurodata-worker -p neurodata-trainer) or set NEURODATA_BIN_DIR",
        p.display()
    );
    p
}

/// A `--flag` appears in help text as a whole word.
fn help_mentions(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let after = help[i + flag.len()..].chars().next();
        let before = help[..i].chars().next_back();
        matches!(after, None | Some(' ' | '\n' | '=' | ',' | '\t'))
            && matches!(before, None | Some(' ' | '\n' | '\t' | ','))
    })
}

#[test]
fn every_command_line_uses_only_flags_the_binaries_accept() {
    let c = cluster();
    // (binary, subcommand) -> flags used by some rendered container.
    let mut used: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for set in SETS {
        for o in render(c, set, "flags") {
            let Some(spec) = pod_spec(&o) else { continue };
            for container in containers(spec) {
                let command = strings(&container["command"]);
                let Some(bin) = command.first() else {
                    panic!(
                        "{set}: container {} relies on the image's entrypoint",
                        s(container, &["name"])
                    )
                };
                let name = Path::new(bin)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                if name == "sh" {
                    continue; // the state-init step of the validator, not one of ours
                }
                let args = strings(&container["args"]);
                let sub = match name.as_str() {
                    "cometbft" | "neurodata-worker" => args.first().cloned().unwrap_or_default(),
                    _ => String::new(),
                };
                let flags = used.entry((name, sub)).or_default();
                flags.extend(
                    args.iter()
                        .filter(|a| a.starts_with("--"))
                        .map(|a| a.split('=').next().unwrap_or_default().to_owned()),
                );
            }
        }
    }
    let bins: BTreeSet<&str> = used.keys().map(|(b, _)| b.as_str()).collect();
    assert_eq!(
        bins,
        [
            "cometbft",
            "neurodata-abci",
            "neurodata-gateway",
            "neurodata-worker"
        ]
        .into(),
        "the chart runs these binaries"
    );
    let mut missing = Vec::new();
    for ((bin, sub), flags) in &used {
        let mut cmd = Command::new(binary(bin));
        if !sub.is_empty() {
            cmd.arg(sub);
        }
        let out = output(cmd.arg("--help"));
        let help = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{bin} {sub} --help failed: {help}");
        for flag in flags {
            if !help_mentions(&help, flag) {
                missing.push(format!("{bin} {sub} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags the binaries do not accept: {missing:?}"
    );
}

/// `key = value` lines of a TOML file as `section.key` (enough for CometBFT's flat config).
fn toml_keys(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        } else if let Some((key, _)) = line.split_once('=') {
            keys.insert(format!("{section}{}", key.trim()));
        }
    }
    keys
}

#[test]
fn rendered_config_files_use_only_keys_the_programs_know() {
    let c = cluster();
    let objects = render(c, "everything-s3", "config");
    // CometBFT: every key of our config.toml is in the one `cometbft init` writes, and so is every
    // key a CMT_* variable overrides (viper reads CMT_<KEY> only for keys the file has).
    let home = tempfile::tempdir().expect("temp dir");
    let out = output(
        Command::new(binary("cometbft"))
            .arg("init")
            .arg("--home")
            .arg(home.path()),
    );
    assert!(out.status.success(), "cometbft init: {out:?}");
    let reference = toml_keys(
        &std::fs::read_to_string(home.path().join("config/config.toml"))
            .expect("cometbft init writes config.toml"),
    );
    let ours = toml_keys(s(
        find(&objects, "ConfigMap", "nd-neurodata-validator"),
        &["data", "config.toml"],
    ));
    let unknown: Vec<&String> = ours.difference(&reference).collect();
    assert!(
        unknown.is_empty(),
        "config.toml keys CometBFT does not have: {unknown:?}"
    );
    let sts = find(&objects, "StatefulSet", "nd-neurodata-validator");
    let spec = pod_spec(sts).expect("pod template");
    let cometbft = containers(spec)
        .into_iter()
        .find(|c| s(c, &["name"]) == "cometbft")
        .expect("a cometbft container");
    for var in cometbft["env"].as_sequence().into_iter().flatten() {
        let name = s(var, &["name"]);
        let Some(key) = name.strip_prefix("CMT_") else {
            continue;
        };
        let key = key.to_lowercase();
        let dotted = key.replacen("p2p_", "p2p.", 1);
        assert!(
            ours.contains(&key) || ours.contains(&dotted),
            "{name} overrides a key config.toml lacks (viper would ignore it)"
        );
    }

    // The gateway: every key is a field of neurodata_gateway::Config (deny_unknown_fields).
    let config_rs = std::fs::read_to_string(workspace_root().join("gateway/src/config.rs"))
        .expect("gateway/src/config.rs");
    let gateway = toml_keys(s(
        find(&objects, "ConfigMap", "nd-neurodata-gateway"),
        &["data", "gateway.toml"],
    ));
    for key in &gateway {
        assert!(
            config_rs.contains(&format!("    pub {key}:")),
            "gateway.toml key {key} is not a field of the gateway's Config"
        );
    }
}

#[test]
fn schema_refuses_bad_values_and_names_the_field() {
    let c = cluster();
    let chart = chart_dir();
    for (file, fields) in [
        ("unknown-runner", &["runner"][..]),
        ("bad-org-and-peer", &["org", "persistentPeers"][..]),
        ("unknown-key", &["blobstore"][..]),
        ("missing-keys-secret", &["keysSecret"][..]),
    ] {
        let values = chart.join("ci/bad").join(format!("{file}.yaml"));
        let out =
            output(
                c.helm()
                    .args(["template", "nd", path_str(&chart), "-f", path_str(&values)]),
            );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ci/bad/{file}.yaml was accepted");
        for field in fields {
            assert!(
                stderr.contains(field),
                "ci/bad/{file}.yaml: the error does not name {field}: {stderr}"
            );
        }
    }
}

/// Pre-binds a hostPath PersistentVolume to each claim the release will make: no provisioner
/// runs in the test cluster, and `helm install --wait` waits for bound claims and ready pods.
async fn volumes_for(client: &kube::Client, ns: &str, objects: &[Value]) {
    let mut claims: Vec<(String, Value)> = Vec::new();
    for o in objects {
        match s(o, &["kind"]) {
            "PersistentVolumeClaim" => {
                claims.push((s(o, &["metadata", "name"]).to_owned(), o["spec"].clone()))
            }
            "StatefulSet" => {
                let replicas = o["spec"]["replicas"].as_u64().unwrap_or(1);
                for t in o["spec"]["volumeClaimTemplates"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                {
                    for i in 0..replicas {
                        claims.push((
                            format!(
                                "{}-{}-{i}",
                                s(t, &["metadata", "name"]),
                                s(o, &["metadata", "name"])
                            ),
                            t["spec"].clone(),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for (name, spec) in claims {
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": format!("{ns}-{name}")},
            "spec": {
                "capacity": {"storage": s(&spec, &["resources", "requests", "storage"])},
                "accessModes": strings(&spec["accessModes"]),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "",
                "hostPath": {"path": format!("/tmp/{ns}/{name}")},
                "claimRef": {"namespace": ns, "name": name},
            }
        }))
        .expect("a PersistentVolume");
        pvs.create(&PostParams::default(), &pv)
            .await
            .unwrap_or_else(|e| panic!("creating the volume of {name}: {e}"));
    }
}

/// Plays the cluster's load-balancer controller (a cloud's, MetalLB) for namespace `ns`: none
/// runs here, and `helm install --wait` waits until each LoadBalancer Service (a validator's
/// p2p) has an address. Gives each one a documentation address (192.0.2.0/24).
fn load_balancers(client: kube::Client, ns: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let services: Api<Service> = Api::namespaced(client, &ns);
        loop {
            if let Ok(list) = services.list(&ListParams::default()).await {
                for svc in list.items {
                    let balanced = svc.spec.as_ref().and_then(|sp| sp.type_.as_deref())
                        == Some("LoadBalancer");
                    let addressed = svc
                        .status
                        .as_ref()
                        .and_then(|st| st.load_balancer.as_ref())
                        .and_then(|lb| lb.ingress.as_ref())
                        .is_some_and(|i| !i.is_empty());
                    if balanced && !addressed {
                        let name = svc.metadata.name.unwrap_or_default();
                        let status = serde_json::json!({"status": {"loadBalancer": {
                            "ingress": [{"ip": "192.0.2.10"}]}}});
                        let _ = services
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                            .await;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    })
}

/// prometheus-operator's ServiceMonitor CRD, as much of it as the API server needs to store one.
async fn service_monitor_crd(client: &kube::Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": "ServiceMonitor", "listKind": "ServiceMonitorList",
                      "plural": "servicemonitors", "singular": "servicemonitor"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object",
                              "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("a CRD");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating the ServiceMonitor CRD: {e}"),
    }
    // Established within a few seconds; bounded poll.
    for _ in 0..100 {
        let got = api
            .get("servicemonitors.monitoring.coreos.com")
            .await
            .expect("reading the CRD");
        let established = got
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the ServiceMonitor CRD was not established");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_value_set_installs_and_an_upgrade_reaches_the_cluster() {
    let c = cluster();
    let client = c.client().await;
    service_monitor_crd(&client).await;
    let chart = chart_dir();
    for set in SETS {
        let ns = c.namespace(set).await;
        let objects = render(c, set, &ns);
        volumes_for(&client, &ns, &objects).await;
        let balancer = load_balancers(client.clone(), ns.clone());
        let values = values(set);
        helm(
            c,
            &[
                "install",
                "nd",
                path_str(&chart),
                "--namespace",
                &ns,
                "-f",
                path_str(&values),
                "--wait",
                "--timeout",
                "180s",
            ],
        );
        if set == "everything-s3" {
            let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
            let got = sts
                .get("nd-neurodata-validator")
                .await
                .expect("the StatefulSet");
            assert_eq!(
                got.status.and_then(|s| s.ready_replicas),
                Some(2),
                "both validators ready"
            );
        }
        if set == "member" {
            helm(
                c,
                &[
                    "upgrade",
                    "nd",
                    path_str(&chart),
                    "--namespace",
                    &ns,
                    "-f",
                    path_str(&values),
                    "--set",
                    "worker.capacity=3",
                    "--wait",
                    "--timeout",
                    "180s",
                ],
            );
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            let worker = deployments
                .get("nd-neurodata-worker")
                .await
                .expect("the worker Deployment");
            let args = worker
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|p| p.containers.into_iter().next())
                .and_then(|c| c.args)
                .unwrap_or_default();
            assert!(
                args.windows(2).any(|w| w == ["--capacity", "3"]),
                "the upgrade changed the worker's capacity: {args:?}"
            );
            let status: serde_json::Value = serde_json::from_str(&helm(
                c,
                &["status", "nd", "--namespace", &ns, "-o", "json"],
            ))
            .expect("helm status -o json");
            assert_eq!(
                status["version"], 2,
                "the release's revision after one upgrade"
            );
            assert_eq!(status["info"]["status"], "deployed");
        }
        balancer.abort();
    }
}
