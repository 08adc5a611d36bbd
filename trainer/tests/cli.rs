//! End-to-end tests of the `trainer` binary: every model type through run, eval (tract) and
//! predict; bit-exact model files across CPU models (qemu-user) and thread counts; segment
//! verification and tampering; bad input; limits; and accuracy against scikit-learn.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn trainer(prefix: &[&str], args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_trainer");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args).output().expect("start trainer")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "trainer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: Output) -> String {
    assert!(
        !out.status.success(),
        "trainer succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Written pretty, one field a line, as a user would, so error positions can be checked.
fn write_spec(dir: &Path, name: &str, spec: &Value) -> PathBuf {
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, pretty(spec)).expect("write spec");
    p
}

fn pretty(spec: &Value) -> String {
    serde_json::to_string_pretty(spec).expect("json")
}

/// Where serde_json reports an error found right after the first `needle` in `text`:
/// `line L column C`, the column counting the bytes before it on its line.
fn position_after(text: &str, needle: &str) -> String {
    let at = text.find(needle).expect("needle") + needle.len();
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..at].matches('\n').count() + 1;
    format!("line {line} column {}", at - line_start)
}

fn run_args<'a>(spec: &'a Path, data: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "run",
        "--quiet",
        "--spec",
        spec.to_str().expect("utf8"),
        "--data",
        data.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ]
}

fn run(dir: &Path, name: &str, spec: &Value, data: &Path) -> (PathBuf, Value) {
    let spec = write_spec(dir, name, spec);
    let out = dir.join(name);
    let text = ok(trainer(&[], &run_args(&spec, data, &out)));
    (out, serde_json::from_str(&text).expect("result json"))
}

fn spec_file(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data(name)).expect("spec")).expect("json")
}

/// Breast cancer with `worst_area` as a numeric target and the diagnosis as a categorical
/// feature (exercises one-hot encoding and regression).
fn regression_schema() -> Value {
    let mut s = spec_file("breast_cancer_logreg.json")["schema"].clone();
    for c in s["columns"].as_array_mut().expect("columns") {
        if c["name"] == "diagnosis" {
            c["type"] = json!("categorical");
        }
    }
    s["target"] = json!("worst_area");
    s
}

fn all_model_types() -> Vec<(&'static str, Value, PathBuf)> {
    let bc = data("breast_cancer.csv");
    let mut mlp_reg = json!({
        "schema": regression_schema(),
        "model": {"algorithm": "mlp", "task": "regression", "hidden": [16], "activation": "tanh"},
        "seed": 3,
        "training": {"epochs": 30, "batch_size": 32, "optimizer": {"kind": "sgd", "lr": 0.01, "momentum": 0.9}},
        "checkpoint_every": 30
    });
    mlp_reg["model"]["l2"] = json!(0.0);
    vec![
        (
            "logreg_binary",
            spec_file("breast_cancer_logreg.json"),
            bc.clone(),
        ),
        (
            "logreg_multinomial",
            spec_file("iris_logreg.json"),
            data("iris.csv"),
        ),
        (
            "mlp_classifier",
            spec_file("breast_cancer_mlp.json"),
            bc.clone(),
        ),
        (
            "linear_regression",
            json!({
                "schema": regression_schema(),
                "model": {"algorithm": "linear_regression"},
                "seed": 5,
                "training": {"epochs": 30, "batch_size": 16, "optimizer": {"kind": "adam", "lr": 0.05}},
                "checkpoint_every": 100
            }),
            bc.clone(),
        ),
        ("mlp_regression", mlp_reg, bc.clone()),
        (
            "tree_classifier",
            spec_file("breast_cancer_tree.json"),
            bc.clone(),
        ),
        (
            "tree_entropy_multiclass",
            spec_file("iris_tree.json"),
            data("iris.csv"),
        ),
        (
            "tree_regression",
            json!({
                "schema": regression_schema(),
                "model": {"algorithm": "decision_tree", "task": "regression", "max_depth": 6, "min_samples_leaf": 3},
                "seed": 5,
                "checkpoint_every": 8
            }),
            bc,
        ),
    ]
}

#[test]
fn every_model_type_trains_exports_onnx_that_tract_reproduces_and_predicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, spec, file) in all_model_types() {
        let (out, result) = run(dir.path(), name, &spec, &file);
        let metrics = &result["metrics"];
        match metrics["task"].as_str() {
            Some("classification") => assert!(
                metrics["accuracy"].as_f64().expect("accuracy") > 0.85,
                "{name}: {metrics}"
            ),
            _ => assert!(
                metrics["r2"].as_f64().expect("r2") > 0.8,
                "{name}: {metrics}"
            ),
        }
        let eval: Value = serde_json::from_str(&ok(trainer(
            &[],
            &[
                "eval",
                "--out",
                out.to_str().expect("utf8"),
                "--data",
                file.to_str().expect("utf8"),
            ],
        )))
        .expect("eval json");
        assert_eq!(eval["ok"], json!(true), "{name}: {eval}");
        if metrics["task"] == "classification" {
            assert_eq!(eval["labels_agree"], eval["rows"], "{name}: {eval}");
        }
        if name.starts_with("tree") {
            assert_eq!(
                eval["max_scaled_diff"],
                json!(0.0),
                "{name}: trees match exactly"
            );
        }
        let model = out.join("model.safetensors");
        let predict = |extra: &[&str]| {
            let mut args = vec![
                "predict",
                "--model",
                model.to_str().expect("utf8"),
                "--data",
                file.to_str().expect("utf8"),
            ];
            args.extend_from_slice(extra);
            ok(trainer(&[], &args))
        };
        let native = predict(&[]);
        let rows = std::fs::read_to_string(&file)
            .expect("data")
            .lines()
            .count();
        assert_eq!(
            native.lines().count(),
            rows,
            "{name}: header + one line per row"
        );
        if name.starts_with("tree") || name.contains("logreg") {
            let onnx = out.join("model.onnx");
            let via_onnx = predict(&["--onnx", onnx.to_str().expect("utf8")]);
            let labels = |s: &str| -> Vec<String> {
                s.lines()
                    .map(|l| l.split(',').nth(1).unwrap_or("").to_owned())
                    .collect()
            };
            assert_eq!(labels(&native), labels(&via_onnx), "{name}");
        }
    }
}

#[test]
fn predict_reads_rows_without_the_target_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, _) = run(
        dir.path(),
        "iris",
        &spec_file("iris_tree.json"),
        &data("iris.csv"),
    );
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(
        &rows,
        "{\"sepal_length\":5.1,\"sepal_width\":3.5,\"petal_length\":1.4,\"petal_width\":0.2}\n\
         {\"sepal_length\":6.7,\"sepal_width\":3.0,\"petal_length\":5.2,\"petal_width\":2.3}\n",
    )
    .expect("rows");
    let text = ok(trainer(
        &[],
        &[
            "predict",
            "--model",
            out.join("model.safetensors").to_str().expect("utf8"),
            "--data",
            rows.to_str().expect("utf8"),
        ],
    ));
    let labels: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1))
        .collect();
    assert_eq!(labels, ["setosa", "virginica"], "{text}");
}

fn model_sha(prefix: &[&str], threads: &str, spec: &Path, file: &Path, out: &Path) -> String {
    let mut args = vec!["--threads", threads];
    args.extend(run_args(spec, file, out));
    let result: Value = serde_json::from_str(&ok(trainer(prefix, &args))).expect("json");
    result["model_sha256"].as_str().expect("sha").to_owned()
}

/// The same job on CPU models with different SIMD levels (SSE4.2-only Nehalem, AVX2+FMA
/// Haswell, emulated by qemu-user, and this machine's own CPU natively) and with 1 and 2 threads
/// gives one model file. The control: candle's own matmul, run the same way, does change.
#[test]
fn model_files_are_bit_identical_across_cpu_models_and_thread_counts() {
    let qemu = "qemu-x86_64";
    assert!(
        Command::new(qemu).arg("--version").output().is_ok(),
        "{qemu} is missing: scripts/install-deps.sh installs Debian's qemu-user"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mlp = spec_file("breast_cancer_mlp.json");
    // Wide enough that the kernels split rows across threads.
    mlp["model"]["hidden"] = json!([64, 32]);
    mlp["training"] =
        json!({"epochs": 3, "batch_size": 128, "optimizer": {"kind": "adam", "lr": 0.005}});
    let jobs = [
        ("mlp", mlp, data("breast_cancer.csv")),
        ("softmax", spec_file("iris_logreg.json"), data("iris.csv")),
        (
            "tree",
            spec_file("breast_cancer_tree.json"),
            data("breast_cancer.csv"),
        ),
    ];
    let cpus: [&[&str]; 3] = [&[qemu, "-cpu", "Nehalem"], &[qemu, "-cpu", "Haswell"], &[]];
    for (name, spec, file) in &jobs {
        let spec_path = write_spec(dir.path(), name, spec);
        let mut seen = std::collections::BTreeMap::new();
        for (i, cpu) in cpus.iter().enumerate() {
            for threads in ["1", "2"] {
                let out = dir.path().join(format!("{name}-cpu{i}-{threads}"));
                let sha = model_sha(cpu, threads, &spec_path, file, &out);
                seen.insert(format!("{cpu:?} threads={threads}"), sha);
            }
        }
        let distinct: std::collections::BTreeSet<&String> = seen.values().collect();
        assert_eq!(distinct.len(), 1, "{name}: {seen:#?}");
    }

    let digest = env!("CARGO_BIN_EXE_kernel-digest");
    let lines = |cpu: &str| {
        let out = Command::new(qemu)
            .args(["-cpu", cpu, digest])
            .output()
            .expect("kernel-digest");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (nehalem, haswell) = (lines("Nehalem"), lines("Haswell"));
    let field = |s: &str, key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key).map(str::to_owned))
            .unwrap_or_default()
    };
    assert_ne!(
        field(&nehalem, "candle "),
        field(&haswell, "candle "),
        "control: candle's default matmul should round differently with FMA"
    );
    assert_eq!(
        field(&nehalem, "deterministic "),
        field(&haswell, "deterministic ")
    );
}

fn verify(out: &Path, file: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify",
        "--out",
        out.to_str().expect("utf8"),
        "--data",
        file.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    trainer(&[], &args)
}

#[test]
fn segments_verify_and_tampering_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = data("breast_cancer.csv");
    for (name, spec) in [
        ("mlp", spec_file("breast_cancer_mlp.json")),
        ("tree", spec_file("breast_cancer_tree.json")),
    ] {
        let (out, result) = run(dir.path(), name, &spec, &file);
        let segments = result["segments"].as_u64().expect("segments") as usize;
        assert!(segments >= 4, "{name}: {segments} segments");
        let all: Value = serde_json::from_str(&ok(verify(&out, &file, &["--all"]))).expect("json");
        assert_eq!(all["verified"].as_array().expect("list").len(), segments);
        let sampled: Value = serde_json::from_str(&ok(verify(
            &out,
            &file,
            &["--sample", "0.25", "--beacon", "00ff"],
        )))
        .expect("json");
        assert_eq!(
            sampled["verified"].as_array().expect("list").len(),
            segments.div_ceil(4)
        );

        // A flipped byte in a checkpoint.
        let ckpt = out.join("checkpoints/00002.ckpt");
        let original = std::fs::read(&ckpt).expect("checkpoint");
        let mut bad = original.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        std::fs::write(&ckpt, &bad).expect("write");
        let e = err(verify(&out, &file, &["--segment", "2"]));
        assert!(e.contains("checkpoint 2 is corrupt"), "{name}: {e}");
        std::fs::write(&ckpt, b"garbage").expect("write");
        let e = err(verify(&out, &file, &["--segment", "2"]));
        assert!(e.contains("checkpoint 2 is corrupt"), "{name}: {e}");
        // Segments that do not start at the damaged checkpoint still verify.
        ok(verify(&out, &file, &["--segment", "0"]));
        std::fs::write(&ckpt, &original).expect("restore");

        // A forged trace: leaf 3 replaced and the root recomputed, as a cheating trainer would.
        let trace_path = out.join("trace.json");
        let result_path = out.join("result.json");
        let trace_text = std::fs::read_to_string(&trace_path).expect("trace");
        let result_text = std::fs::read_to_string(&result_path).expect("result");
        let mut trace: neurodata_trainer::trace::Trace =
            serde_json::from_str(&trace_text).expect("trace json");
        let mut leaves: Vec<[u8; 32]> = trace
            .leaves
            .iter()
            .map(|h| hex::decode(h).expect("hex").try_into().expect("32"))
            .collect();
        leaves[3][0] ^= 1;
        let forged = neurodata_trainer::trace::Trace::new(
            trace.checkpoint_every,
            trace.steps.clone(),
            leaves,
        );
        let mut forged_result: Value = serde_json::from_str(&result_text).expect("json");
        forged_result["trace_root"] = json!(forged.root);
        std::fs::write(&trace_path, serde_json::to_string(&forged).expect("json")).expect("write");
        std::fs::write(&result_path, forged_result.to_string()).expect("write");
        let e = err(verify(&out, &file, &["--segment", "2"]));
        assert!(e.contains("trace mismatch in segment 2"), "{name}: {e}");
        // A trace that does not hash to the result's root.
        trace.root = "00".repeat(32);
        std::fs::write(&trace_path, serde_json::to_string(&trace).expect("json")).expect("write");
        let e = err(verify(&out, &file, &["--segment", "0"]));
        assert!(e.contains("trace.json does not match"), "{name}: {e}");
        std::fs::write(&trace_path, &trace_text).expect("restore");
        std::fs::write(&result_path, &result_text).expect("restore");

        // A result claiming another model.
        let mut claim: Value = serde_json::from_str(&result_text).expect("json");
        claim["model_sha256"] = json!("11".repeat(32));
        std::fs::write(&result_path, claim.to_string()).expect("write");
        let e = err(verify(&out, &file, &["--segment", "0"]));
        assert!(e.contains("model_sha256"), "{name}: {e}");
        std::fs::write(&result_path, &result_text).expect("restore");

        // A model whose preprocessing was altered, re-hashed into the result by its trainer.
        let model_path = out.join("model.safetensors");
        let model_bytes = std::fs::read(&model_path).expect("model");
        let mut model =
            neurodata_trainer::model::Model::from_bytes(&model_bytes).expect("model parses");
        match &mut model.preprocessing.features[0] {
            neurodata_trainer::data::Encoding::Numeric { mean, .. } => *mean += 0.5,
            other => panic!("{name}: first feature is not numeric: {other:?}"),
        }
        let altered = model.to_bytes().expect("model bytes");
        std::fs::write(&model_path, &altered).expect("write");
        let mut claim: Value = serde_json::from_str(&result_text).expect("json");
        claim["model_sha256"] = json!(hex::encode(Sha256::digest(&altered)));
        std::fs::write(&result_path, claim.to_string()).expect("write");
        let e = err(verify(&out, &file, &["--segment", "0"]));
        assert!(e.contains("preprocessing"), "{name}: {e}");
        std::fs::write(&model_path, &model_bytes).expect("restore");
        std::fs::write(&result_path, &result_text).expect("restore");

        // Other data than the run's.
        let e = err(verify(&out, &data("iris.csv"), &["--segment", "0"]));
        assert!(e.contains("data") || e.contains("column"), "{name}: {e}");
        let e = err(verify(&out, &file, &["--segment", "999"]));
        assert!(e.contains("segment 999 does not exist"), "{name}: {e}");
        ok(verify(&out, &file, &["--all"]));
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = json!({
        "schema": {"columns": [
            {"name": "a", "type": "numeric"},
            {"name": "b", "type": "numeric"},
            {"name": "y", "type": "categorical"}
        ], "target": "y"},
        "model": {"algorithm": "logistic_regression"},
        "seed": 1,
        "training": {"epochs": 2, "batch_size": 4, "optimizer": {"kind": "adam", "lr": 0.1}}
    });
    let good_rows = "a,b,y\n1,2,u\n2,3,v\n3,1,u\n4,4,v\n5,0,u\n6,2,v\n";
    let mut model_typo = base.clone();
    model_typo["model"] = json!({"algorithm": "mlp", "task": "classification", "hiden": [8]});
    let model_typo_message = format!(
        "job spec: model.hiden: unknown field for algorithm `mlp`, expected one of `task`, \
         `hidden`, `activation`, `dropout`, `l2` at {}",
        position_after(&pretty(&model_typo), "\"hiden\"")
    );
    let mut optimizer_typo = base.clone();
    optimizer_typo["training"]["optimizer"]["momentm"] = json!(0.9);
    let optimizer_typo_message = format!(
        "training.optimizer.momentm: unknown field for kind `adam`, expected one of `lr`, \
         `beta1`, `beta2`, `eps` at {}",
        position_after(&pretty(&optimizer_typo), "\"momentm\"")
    );
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "missing",
            base.clone(),
            "a,y\n1,u\n2,v\n",
            "missing column(s) [\"b\"]",
        ),
        (
            "extra",
            base.clone(),
            "a,b,c,y\n1,2,3,u\n2,3,4,v\n",
            "[\"c\"] are not in the schema",
        ),
        (
            "text",
            base.clone(),
            "a,b,y\n1,2,u\n2,x,v\n",
            "line 3, column \"b\": \"x\" is not a number",
        ),
        (
            "nan",
            base.clone(),
            "a,b,y\n1,2,u\nNaN,3,v\n",
            "is not finite",
        ),
        (
            "inf",
            base.clone(),
            "a,b,y\n1,-inf,u\n2,3,v\n",
            "is not finite",
        ),
        ("empty", base.clone(), "", "no data rows"),
        ("header_only", base.clone(), "a,b,y\n", "no data rows"),
        (
            "one_class",
            base.clone(),
            "a,b,y\n1,2,u\n2,3,u\n3,1,u\n4,4,u\n",
            "single class \"u\"",
        ),
        ("one_row", base.clone(), "a,b,y\n1,2,u\n", "cannot be split"),
        (
            "ragged",
            base.clone(),
            "a,b,y\n1,2\n",
            "2 fields, the header has 3",
        ),
        (
            "no_target",
            {
                let mut s = base.clone();
                s["schema"]["target"] = json!("z");
                s
            },
            good_rows,
            "the target \"z\" is not one of the schema's columns",
        ),
        (
            "lr",
            {
                let mut s = base.clone();
                s["training"]["optimizer"]["lr"] = json!(-1);
                s
            },
            good_rows,
            "training.optimizer.lr = -1 is out of range",
        ),
        (
            "depth",
            {
                let mut s = base.clone();
                s["model"] = json!({"algorithm": "decision_tree", "task": "classification", "max_depth": 100});
                s
            },
            good_rows,
            "model.max_depth = 100 is out of range",
        ),
        (
            "hidden",
            {
                let mut s = base.clone();
                s["model"] =
                    json!({"algorithm": "mlp", "task": "classification", "hidden": [8, 8, 8]});
                s
            },
            good_rows,
            "model.hidden",
        ),
        (
            "batch",
            {
                let mut s = base.clone();
                s["training"]["batch_size"] = json!(0);
                s
            },
            good_rows,
            "training.batch_size = 0",
        ),
        (
            "typo",
            {
                let mut s = base.clone();
                s["epochs"] = json!(3);
                s
            },
            good_rows,
            "unknown field `epochs`",
        ),
        ("model_typo", model_typo, good_rows, &model_typo_message),
        (
            "optimizer_typo",
            optimizer_typo,
            good_rows,
            &optimizer_typo_message,
        ),
        (
            "diverges",
            {
                let mut s = base.clone();
                s["model"] = json!({"algorithm": "linear_regression"});
                s["schema"]["columns"][2]["type"] = json!("numeric");
                s["training"]["optimizer"] = json!({"kind": "sgd", "lr": 10});
                s["training"]["epochs"] = json!(200);
                s
            },
            "a,b,y\n1,2,1e30\n2,3,-1e30\n3,1,3e30\n4,4,1\n5,0,2\n6,2,7\n",
            "training diverged",
        ),
    ];
    for (name, spec, rows, want) in cases {
        let spec = write_spec(dir.path(), name, &spec);
        let file = dir.path().join(format!("{name}.csv"));
        std::fs::write(&file, rows).expect("rows");
        let out = dir.path().join(name);
        let e = err(trainer(&[], &run_args(&spec, &file, &out)));
        assert_eq!(
            e.matches(want).count(),
            1,
            "{name}: the message, cause included, is printed once: {e}"
        );
        assert!(
            e.starts_with("error: ") && e.lines().count() == 1,
            "{name}: one line, no `Caused by:` or backtrace: {e}"
        );
        assert!(
            !out.join("result.json").exists(),
            "{name}: no result after a failure"
        );
    }
    // A failing rerun into a directory holding an earlier run leaves none of its result behind.
    let (reused, _) = run(
        dir.path(),
        "reused",
        &spec_file("iris_tree.json"),
        &data("iris.csv"),
    );
    assert!(reused.join("result.json").exists());
    let spec = write_spec(dir.path(), "reused_spec", &spec_file("iris_tree.json"));
    let one_class = dir.path().join("one_class.csv");
    let mut forced = run_args(&spec, &one_class, &reused);
    forced.push("--force");
    let e = err(trainer(&[], &forced));
    assert!(e.contains("missing column"), "{e}");
    assert!(!reused.join("result.json").exists());
    assert!(!reused.join("checkpoints/00000.ckpt").exists());
    let e = err(trainer(
        &[],
        &run_args(
            Path::new("/nonexistent.json"),
            &data("iris.csv"),
            dir.path(),
        ),
    ));
    assert_eq!(
        e.trim_end(),
        "error: reading /nonexistent.json: No such file or directory (os error 2)"
    );
    let corrupt = dir.path().join("model.safetensors");
    let iris = data("iris.csv");
    let predict_with_corrupt_model = || {
        err(trainer(
            &[],
            &[
                "predict",
                "--model",
                corrupt.to_str().expect("utf8"),
                "--data",
                iris.to_str().expect("utf8"),
            ],
        ))
    };
    std::fs::write(&corrupt, b"\x10\0\0\0\0\0\0\0{}").expect("write");
    let e = predict_with_corrupt_model();
    assert_eq!(
        e.matches("not a valid tensor file").count(),
        1,
        "once, no `Caused by:`: {e}"
    );

    // A well-formed file whose architecture does not fit its own preprocessing.
    let (out, _) = run(
        dir.path(),
        "iris_mlp",
        &{
            let mut s = spec_file("iris_logreg.json");
            s["model"] = json!({"algorithm": "mlp", "task": "classification", "hidden": [4]});
            s
        },
        &data("iris.csv"),
    );
    let bytes = std::fs::read(out.join("model.safetensors")).expect("model");
    let mut file = neurodata_trainer::tensors::TensorFile::from_bytes(&bytes).expect("parses");
    let arch = file.metadata["architecture"].replace("[[4,4],[4,3]]", "[[4,4],[5,3]]");
    assert_ne!(arch, file.metadata["architecture"], "the edit applies");
    file.metadata.insert("architecture".into(), arch);
    std::fs::write(&corrupt, file.to_bytes()).expect("write");
    let e = predict_with_corrupt_model();
    assert!(e.contains("architecture does not fit"), "{e}");
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn run_refuses_to_overwrite_an_earlier_run_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let iris = data("iris.csv");
    let (out, first) = run(dir.path(), "out", &spec_file("iris_tree.json"), &iris);
    let mut listed = neurodata_trainer::job::earlier_outputs(&out);
    listed.sort();
    assert_eq!(
        listed,
        files_under(&out),
        "earlier_outputs names every file a run writes"
    );
    let model = out.join("model.safetensors");
    let model_bytes = std::fs::read(&model).expect("model");

    let other = write_spec(dir.path(), "other", &spec_file("iris_logreg.json"));
    let e = err(trainer(&[], &run_args(&other, &iris, &out)));
    assert_eq!(
        e.trim_end(),
        format!(
            "error: refusing to overwrite {} and {} other file(s) of an earlier run; pass --force \
             to overwrite",
            model.display(),
            listed.len() - 1
        )
    );
    assert_eq!(
        std::fs::read(&model).expect("model"),
        model_bytes,
        "the refused run wrote nothing"
    );

    let mut forced = run_args(&other, &iris, &out);
    forced.push("--force");
    let second: Value = serde_json::from_str(&ok(trainer(&[], &forced))).expect("json");
    assert_ne!(second["model_sha256"], first["model_sha256"]);
    let written = std::fs::read(&model).expect("model");
    assert_eq!(
        json!(hex::encode(Sha256::digest(&written))),
        second["model_sha256"],
        "--force replaced the model"
    );

    // A directory holding other files is no earlier run.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::write(shared.join("notes.txt"), "mine").expect("write");
    ok(trainer(&[], &run_args(&other, &iris, &shared)));
    assert_eq!(
        std::fs::read_to_string(shared.join("notes.txt")).expect("notes"),
        "mine"
    );

    // A file named as the output directory is left alone, even with --force.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "mine").expect("write");
    let mut forced = run_args(&other, &iris, &file);
    forced.push("--force");
    let e = err(trainer(&[], &forced));
    assert_eq!(
        e.trim_end(),
        format!("error: {}: exists and is not a directory", file.display())
    );
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "mine");
}

#[test]
fn progress_has_no_terminal_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(dir.path(), "logreg", &spec_file("iris_logreg.json"));
    let out = dir.path().join("out");
    let iris = data("iris.csv");
    let mut args = run_args(&spec, &iris, &out);
    args.retain(|a| *a != "--quiet");
    let output = trainer(&[], &args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ok(output);
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn jobs_over_their_time_or_memory_limit_stop_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("big.csv");
    let mut text = String::from("a,b,c,d,y\n");
    let mut s = neurodata_trainer::rng::Stream::new(1, "test", 0);
    for _ in 0..200_000 {
        let v: Vec<f32> = (0..4).map(|_| s.unit_f32()).collect();
        let y = if v[0] + v[1] > v[2] + v[3] { "p" } else { "q" };
        text.push_str(&format!("{},{},{},{},{y}\n", v[0], v[1], v[2], v[3]));
    }
    std::fs::write(&file, text).expect("write");
    let columns: Vec<Value> = ["a", "b", "c", "d"]
        .iter()
        .map(|c| json!({"name": c, "type": "numeric"}))
        .chain([json!({"name": "y", "type": "categorical"})])
        .collect();
    let spec = |limits: Value| {
        json!({
            "schema": {"columns": columns, "target": "y"},
            "model": {"algorithm": "mlp", "task": "classification", "hidden": [32]},
            "seed": 1,
            "training": {"epochs": 1000, "batch_size": 8, "optimizer": {"kind": "adam", "lr": 0.01}},
            "limits": limits
        })
    };
    let timed = write_spec(
        dir.path(),
        "time",
        &spec(json!({"max_seconds": 1, "max_memory_mb": 4096})),
    );
    let e = err(trainer(
        &[],
        &run_args(&timed, &file, &dir.path().join("t")),
    ));
    assert!(e.contains("limit: time limit of 1 s exceeded"), "{e}");
    let small = write_spec(
        dir.path(),
        "memory",
        &spec(json!({"max_seconds": 60, "max_memory_mb": 16})),
    );
    let e = err(trainer(
        &[],
        &run_args(&small, &file, &dir.path().join("m")),
    ));
    assert!(e.contains("limit: memory limit of 16 MiB"), "{e}");
}

/// Logistic regression and a decision tree on the Wisconsin breast cancer data (from
/// scikit-learn's package, see tests/data/README.md) reach scikit-learn's test accuracy on the
/// same split within one percentage point.
#[test]
fn accuracy_is_within_one_point_of_scikit_learn() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = Command::new(root.join("scripts/python-env.sh"))
        .output()
        .expect("run scripts/python-env.sh");
    assert!(
        env.status.success(),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );
    let python = String::from_utf8_lossy(&env.stdout).trim().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = data("breast_cancer.csv");
    for name in ["breast_cancer_logreg", "breast_cancer_tree"] {
        let (out, result) = run(dir.path(), name, &spec_file(&format!("{name}.json")), &file);
        let ours = result["metrics"]["accuracy"].as_f64().expect("accuracy");
        let reference = Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sklearn_reference.py"))
            .arg(data(&format!("{name}.json")))
            .arg(&file)
            .arg(out.join("split.json"))
            .output()
            .expect("run python");
        let text = ok(reference);
        let sklearn: Value = serde_json::from_str(&text).expect("json");
        let theirs = sklearn["accuracy"].as_f64().expect("accuracy");
        eprintln!("{name}: ours {ours:.4}, scikit-learn {theirs:.4}");
        assert!(
            (ours - theirs).abs() <= 0.01 + 1e-12,
            "{name}: ours {ours}, scikit-learn {theirs}"
        );
    }
}
