//! Parsing and checking the Dockerfiles under `deploy/images`.
//!
//! [`Dockerfile::parse`] reads the subset of the Dockerfile language our images use — parser
//! directives, comments, line continuations, `FROM … AS name`, `ARG`, `ENV`, `LABEL`, `WORKDIR`,
//! `USER`, `RUN` (with `--mount` flags), `COPY` (with `--from`), exec-form `ENTRYPOINT`/`CMD`,
//! `EXPOSE`, `VOLUME`, `STOPSIGNAL` — and refuses what it does not understand (heredocs, `ADD`,
//! `ONBUILD`, `SHELL`, `HEALTHCHECK`, another escape character) with [`Problem::Unsupported`],
//! rather than check a file it has only half read.
//!
//! [`Dockerfile::check`] then holds every image to the rules an operator relies on, each a
//! [`Problem`] variant with the file and line it was found at:
//!
//! - every base image is pinned by a tag or digest, never `latest` or untagged (a rebuild
//!   must not silently pick up another toolchain or runtime);
//! - `COPY --from` names an earlier stage (not an arbitrary image pulled at build time);
//! - `cargo build` is `--locked` (the `Cargo.lock` the tests ran with, and with it the vendored
//!   OpenSSL that verifies signatures as a consensus rule) and names packages and binaries that
//!   exist in the workspace ([`Workspace`]);
//! - every binary the final stage copies into a `bin` directory is one its stage builds (a
//!   cargo binary of that name, from the profile's output directory, or a `go build -o`), and is
//!   not read from a cache mount (which is not part of the stage's filesystem);
//! - the final stage runs as a numeric non-root user (Kubernetes' `runAsNonRoot` can only verify
//!   a numeric uid), has no shell use (no `RUN` on a shell-less base such as distroless, no
//!   shell-form `ENTRYPOINT`/`CMD`), and its `ENTRYPOINT` is the absolute path of a file it copied.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A problem found in a Dockerfile, at a line of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {problem}", path.display())]
pub struct Error {
    /// The Dockerfile.
    pub path: PathBuf,
    /// The 1-based line the instruction starts at (0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a Dockerfile: one variant per syntax error and per rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(String),
    /// An instruction keyword Docker does not have.
    #[error("unknown instruction `{0}`")]
    UnknownInstruction(String),
    /// Valid Docker syntax this checker does not read, so it cannot vouch for the file.
    #[error("{0} is not supported by this checker")]
    Unsupported(String),
    /// An instruction whose arguments do not parse.
    #[error("malformed `{instruction}`: {reason}")]
    Malformed {
        /// The instruction keyword.
        instruction: String,
        /// What is wrong with its arguments.
        reason: String,
    },
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("`{0}` before the first FROM")]
    BeforeFrom(String),
    /// The file has no `FROM`.
    #[error("no FROM: the file builds no image")]
    NoStage,
    /// Two stages with the same name.
    #[error("stage name `{0}` is used twice")]
    DuplicateStage(String),
    /// A base image with neither tag nor digest.
    #[error("image `{0}` is not pinned: give it a tag or a digest")]
    UntaggedImage(String),
    /// A base image tagged `latest`.
    #[error("image `{0}` is pinned to `latest`, which moves")]
    LatestTag(String),
    /// A base image reference still holding a variable no `ARG` gives a default to.
    #[error("image `{0}` has a variable without a default")]
    UnresolvedImage(String),
    /// `COPY --from` names no earlier stage.
    #[error("COPY --from=`{0}` names no earlier stage")]
    CopyFromUnknownStage(String),
    /// `cargo build` without `--locked` (or `--frozen`).
    #[error("`cargo build` without --locked: the image would not build what Cargo.lock pins")]
    CargoBuildUnlocked,
    /// `cargo build -p` names no workspace package.
    #[error("`cargo build` names package `{0}`, which is not a workspace member")]
    UnknownPackage(String),
    /// `cargo build --bin` names a binary none of the built packages has.
    #[error("`cargo build` names binary `{0}`, which none of its packages has")]
    UnknownBinary(String),
    /// The final stage copies a binary its source stage does not build.
    #[error("the final stage copies `{file}` from stage `{stage}`, which does not build it")]
    CopiedBinaryNotBuilt {
        /// The stage copied from.
        stage: String,
        /// The path copied.
        file: String,
    },
    /// The final stage copies a file from a cache mount, which is not in the stage's filesystem.
    #[error("`{file}` lies in a cache mount of stage `{stage}`: copy it out in the same RUN")]
    CopyFromCacheMount {
        /// The stage copied from.
        stage: String,
        /// The path copied.
        file: String,
    },
    /// The final stage sets no `USER`, so it runs as root.
    #[error("the final stage sets no USER: the image would run as root")]
    NoUser,
    /// The final stage's user is a name, which Kubernetes' `runAsNonRoot` cannot verify.
    #[error("USER `{0}` is not numeric (uid[:gid])")]
    NonNumericUser(String),
    /// The final stage's user or group is root.
    #[error("USER `{0}` is root")]
    RootUser(String),
    /// A `RUN` in a final stage whose base image has no shell.
    #[error("RUN in the final stage, whose base `{0}` has no shell")]
    RunWithoutShell(String),
    /// A shell-form `ENTRYPOINT` or `CMD` in the final stage.
    #[error("shell-form {0}: use the exec form [\"/path\", …]")]
    ShellForm(String),
    /// The final stage has no `ENTRYPOINT`.
    #[error("the final stage has no ENTRYPOINT")]
    NoEntrypoint,
    /// The `ENTRYPOINT` program is not an absolute path.
    #[error("ENTRYPOINT `{0}` is not an absolute path")]
    EntrypointNotAbsolute(String),
    /// The `ENTRYPOINT` program is not a file the final stage copied.
    #[error("ENTRYPOINT `{0}` is not a file the final stage copies")]
    EntrypointNotCopied(String),
}

/// The workspace's packages and the binaries each builds, as `cargo build -p/--bin` names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workspace {
    packages: BTreeMap<String, BTreeSet<String>>,
}

/// Why the workspace's manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// A manifest could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A manifest is not TOML.
    #[error("{}: {source}", path.display())]
    Toml {
        /// The manifest.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
    /// A manifest lacks what cargo requires of it.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is missing or malformed.
        reason: String,
    },
}

impl Workspace {
    /// A workspace of the given packages and their binaries (for tests and callers that know).
    pub fn from_packages<P, B, S>(packages: P) -> Self
    where
        P: IntoIterator<Item = (S, B)>,
        B: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            packages: packages
                .into_iter()
                .map(|(name, bins)| (name.into(), bins.into_iter().map(Into::into).collect()))
                .collect(),
        }
    }

    /// Reads the workspace at `root`: `[workspace] members` of its `Cargo.toml`, and for each
    /// member its package name and binaries — `[[bin]]` names, plus cargo's automatic targets
    /// (`src/main.rs` as the package name, `src/bin/*.rs`, `src/bin/*/main.rs`) unless
    /// `autobins = false`. Member globs are refused: ours are listed one by one.
    pub fn load(root: &Path) -> Result<Self, WorkspaceError> {
        let manifest = root.join("Cargo.toml");
        let table = read_toml(&manifest)?;
        let members = table
            .get("workspace")
            .and_then(|w| w.get("members"))
            .and_then(toml::Value::as_array)
            .ok_or_else(|| WorkspaceError::Manifest {
                path: manifest.clone(),
                reason: "no [workspace] members".into(),
            })?;
        let mut packages = BTreeMap::new();
        for member in members {
            let member = member
                .as_str()
                .filter(|m| !m.contains(['*', '?', '[']))
                .ok_or_else(|| WorkspaceError::Manifest {
                    path: manifest.clone(),
                    reason: format!("member {member} is not a plain path"),
                })?;
            let (name, bins) = read_package(&root.join(member))?;
            packages.insert(name, bins);
        }
        Ok(Self { packages })
    }

    /// The packages' names.
    pub fn packages(&self) -> impl Iterator<Item = &str> {
        self.packages.keys().map(String::as_str)
    }

    /// The binaries of a package, if it is a member.
    pub fn bins(&self, package: &str) -> Option<&BTreeSet<String>> {
        self.packages.get(package)
    }
}

fn read_toml(path: &Path) -> Result<toml::Table, WorkspaceError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkspaceError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| WorkspaceError::Toml {
        path: path.to_owned(),
        source,
    })
}

fn read_package(dir: &Path) -> Result<(String, BTreeSet<String>), WorkspaceError> {
    let manifest = dir.join("Cargo.toml");
    let table = read_toml(&manifest)?;
    let package = table.get("package");
    let name = package
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| WorkspaceError::Manifest {
            path: manifest.clone(),
            reason: "no package.name".into(),
        })?
        .to_owned();
    let mut bins = BTreeSet::new();
    let mut explicit_paths = BTreeSet::new();
    for bin in table
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
    {
        let bin_name = bin
            .get("name")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| WorkspaceError::Manifest {
                path: manifest.clone(),
                reason: "a [[bin]] without a name".into(),
            })?;
        bins.insert(bin_name.to_owned());
        if let Some(path) = bin.get("path").and_then(toml::Value::as_str) {
            explicit_paths.insert(path.trim_start_matches("./").to_owned());
        }
    }
    let autobins = package
        .and_then(|p| p.get("autobins"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(true);
    if autobins {
        if dir.join("src/main.rs").is_file() && !explicit_paths.contains("src/main.rs") {
            bins.insert(name.clone());
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            for entry in entries.flatten() {
                let path = entry.path();
                let auto = if path.is_dir() && path.join("main.rs").is_file() {
                    path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                } else if path.extension().is_some_and(|e| e == "rs") {
                    path.file_stem().and_then(|n| n.to_str()).map(str::to_owned)
                } else {
                    None
                };
                bins.extend(auto);
            }
        }
    }
    Ok((name, bins))
}

/// A parsed Dockerfile: the `ARG`s before the first `FROM`, then its stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The file it was read from (in errors).
    pub path: PathBuf,
    /// `ARG`s before the first `FROM`: name and default.
    pub global_args: Vec<(String, Option<String>)>,
    /// The stages in order; the last is the image.
    pub stages: Vec<Stage>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The line of its `FROM`.
    pub line: usize,
    /// The base image as written (variables unexpanded).
    pub image: String,
    /// The base image with the global `ARG` defaults substituted.
    pub resolved_image: String,
    /// `AS name`, lowercased as Docker compares it.
    pub name: Option<String>,
    /// The instructions after `FROM`.
    pub instructions: Vec<Instruction>,
}

/// An instruction and the line it starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// What it is.
    pub kind: InstructionKind,
}

/// The instructions this checker reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `ARG name[=default]`.
    Arg {
        /// The variable.
        name: String,
        /// Its default.
        default: Option<String>,
    },
    /// `ENV key=value …` (or the legacy `ENV key value`).
    Env(Vec<(String, String)>),
    /// `LABEL key=value …`.
    Label(Vec<(String, String)>),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`, as written.
    User(String),
    /// `RUN [--flag …] command`.
    Run {
        /// `--mount=…`, `--network=…`: name and value.
        flags: Vec<(String, String)>,
        /// The command.
        command: Command,
    },
    /// `COPY [--from=stage] [--flag …] source … dest`.
    Copy {
        /// `--from`, as written.
        from: Option<String>,
        /// The sources.
        sources: Vec<String>,
        /// The destination.
        dest: String,
    },
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `CMD`.
    Cmd(Command),
    /// `EXPOSE`, `VOLUME`, `STOPSIGNAL`: read, not checked.
    Other {
        /// The keyword.
        keyword: String,
        /// Its arguments as written.
        args: String,
    },
}

/// A command in exec form (a JSON array, run without a shell) or shell form (`/bin/sh -c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `["/bin/x", "arg"]`.
    Exec(Vec<String>),
    /// `x arg && y`, continuation lines joined.
    Shell(String),
}

impl Dockerfile {
    /// Reads and parses a Dockerfile.
    pub fn parse_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error {
            path: path.to_owned(),
            line: 0,
            problem: Problem::Read(e.to_string()),
        })?;
        Self::parse(path, &text)
    }

    /// Parses Dockerfile `text`; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let at = |line: usize, problem: Problem| Error {
            path: path.to_owned(),
            line,
            problem,
        };
        let mut dockerfile = Dockerfile {
            path: path.to_owned(),
            global_args: Vec::new(),
            stages: Vec::new(),
        };
        for (line, keyword, args) in logical_lines(text).map_err(|(l, p)| at(l, p))? {
            let kind = parse_instruction(&keyword, &args).map_err(|p| at(line, p))?;
            match kind {
                Parsed::From { image, name } => {
                    let globals = dockerfile
                        .global_args
                        .iter()
                        .filter_map(|(n, d)| Some((n.clone(), d.clone()?)))
                        .collect();
                    let resolved_image = expand(&image, &globals);
                    if let Some(name) = &name
                        && dockerfile
                            .stages
                            .iter()
                            .any(|s| s.name.as_ref() == Some(name))
                    {
                        return Err(at(line, Problem::DuplicateStage(name.clone())));
                    }
                    dockerfile.stages.push(Stage {
                        line,
                        image,
                        resolved_image,
                        name,
                        instructions: Vec::new(),
                    });
                }
                Parsed::Instruction(kind) => match dockerfile.stages.last_mut() {
                    Some(stage) => stage.instructions.push(Instruction { line, kind }),
                    None => match kind {
                        InstructionKind::Arg { name, default } => {
                            dockerfile.global_args.push((name, default));
                        }
                        _ => return Err(at(line, Problem::BeforeFrom(keyword))),
                    },
                },
            }
        }
        if dockerfile.stages.is_empty() {
            return Err(at(0, Problem::NoStage));
        }
        Ok(dockerfile)
    }

    /// The default of a global `ARG` (one declared before the first `FROM`).
    pub fn global_arg(&self, name: &str) -> Option<&str> {
        self.global_args
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, d)| d.as_deref())
    }

    /// The stage the image is made of: the last.
    pub fn final_stage(&self) -> &Stage {
        // `parse` refuses a file without stages.
        &self.stages[self.stages.len() - 1]
    }

    /// The value of a variable in a stage just before its instruction `upto` (an index into
    /// `instructions`; `usize::MAX` for the end of the stage): `ARG` defaults (a bare `ARG`
    /// inherits the global default) and `ENV` values, as Docker scopes them.
    pub fn stage_vars(&self, stage: usize, upto: usize) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        let Some(stage) = self.stages.get(stage) else {
            return vars;
        };
        for instruction in stage.instructions.iter().take(upto) {
            match &instruction.kind {
                InstructionKind::Arg { name, default } => {
                    let value = match default {
                        Some(d) => Some(expand(d, &vars)),
                        None => self.global_arg(name).map(str::to_owned),
                    };
                    if let Some(value) = value {
                        vars.insert(name.clone(), value);
                    }
                }
                InstructionKind::Env(pairs) => {
                    for (k, v) in pairs {
                        let v = expand(v, &vars);
                        vars.insert(k.clone(), v);
                    }
                }
                _ => {}
            }
        }
        vars
    }

    /// A label of the final stage, variables expanded.
    pub fn label(&self, key: &str) -> Option<String> {
        let index = self.stages.len() - 1;
        let stage = self.final_stage();
        stage
            .instructions
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, instruction)| match &instruction.kind {
                InstructionKind::Label(pairs) => pairs
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| expand(v, &self.stage_vars(index, i))),
                _ => None,
            })
    }

    /// The absolute paths the final stage copies files to, from its `COPY` instructions.
    pub fn shipped_files(&self) -> Vec<String> {
        let mut workdir = String::from("/");
        let mut files = Vec::new();
        for instruction in &self.final_stage().instructions {
            match &instruction.kind {
                InstructionKind::Workdir(dir) => workdir = join_path(&workdir, dir),
                InstructionKind::Copy { sources, dest, .. } => {
                    let dest = join_path(&workdir, dest);
                    for source in sources {
                        if dest.ends_with('/') || sources.len() > 1 {
                            files.push(join_path(&dest, basename(source)));
                        } else {
                            files.push(dest.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        files
    }

    /// The `cargo build` commands of a stage, arguments expanded.
    pub fn cargo_builds(&self, stage: usize) -> Vec<(usize, CargoBuild)> {
        self.commands(stage)
            .into_iter()
            .filter_map(|c| Some((c.line, CargoBuild::from_words(&c.words)?)))
            .collect()
    }

    /// Every simple command of every `RUN` of a stage: its line, the RUN's flags and its words
    /// (shell-split, variables expanded).
    fn commands(&self, stage: usize) -> Vec<SimpleCommand<'_>> {
        let Some(s) = self.stages.get(stage) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, instruction) in s.instructions.iter().enumerate() {
            let InstructionKind::Run { flags, command } = &instruction.kind else {
                continue;
            };
            let vars = self.stage_vars(stage, i);
            let commands = match command {
                Command::Exec(words) => vec![words.clone()],
                Command::Shell(text) => shell_commands(text),
            };
            for words in commands {
                let words = words.iter().map(|w| expand(w, &vars)).collect();
                out.push(SimpleCommand {
                    line: instruction.line,
                    flags,
                    words,
                });
            }
        }
        out
    }

    /// Checks every rule against the workspace; returns every problem found, in file order.
    pub fn check(&self, workspace: &Workspace) -> Vec<Error> {
        let mut found = Vec::new();
        let mut push = |line: usize, problem: Problem| {
            found.push(Error {
                path: self.path.clone(),
                line,
                problem,
            });
        };
        for (index, stage) in self.stages.iter().enumerate() {
            if let Some(problem) = self.image_problem(index) {
                push(stage.line, problem);
            }
            for instruction in &stage.instructions {
                if let InstructionKind::Copy {
                    from: Some(from), ..
                } = &instruction.kind
                    && self.stage_index(from, index).is_none()
                {
                    push(
                        instruction.line,
                        Problem::CopyFromUnknownStage(from.clone()),
                    );
                }
            }
            for (line, build) in self.cargo_builds(index) {
                for problem in build.problems(workspace) {
                    push(line, problem);
                }
            }
        }
        for (line, problem) in self.final_stage_problems(workspace) {
            push(line, problem);
        }
        found.sort_by_key(|e| e.line);
        found
    }

    /// The index of the stage `reference` names (by name or number), if it is before `before`.
    fn stage_index(&self, reference: &str, before: usize) -> Option<usize> {
        let reference = reference.to_ascii_lowercase();
        let index = match reference.parse::<usize>() {
            Ok(n) => n,
            Err(_) => self
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(reference.as_str()))?,
        };
        (index < before).then_some(index)
    }

    fn image_problem(&self, index: usize) -> Option<Problem> {
        let stage = &self.stages[index];
        let image = &stage.resolved_image;
        if image.contains('$') || image.is_empty() {
            return Some(Problem::UnresolvedImage(stage.image.clone()));
        }
        if image == "scratch" || self.stage_index(image, index).is_some() {
            return None;
        }
        if image.contains('@') {
            return None;
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.rsplit_once(':') {
            Some((_, "latest")) => Some(Problem::LatestTag(image.clone())),
            Some((_, tag)) if !tag.is_empty() => None,
            _ => Some(Problem::UntaggedImage(image.clone())),
        }
    }

    /// Whether a stage's base, followed through earlier stages, is an image without a shell.
    fn shell_less_base(&self, index: usize) -> Option<String> {
        let image = &self.stages[index].resolved_image;
        if let Some(earlier) = self.stage_index(image, index) {
            return self.shell_less_base(earlier);
        }
        (image == "scratch" || image.starts_with("gcr.io/distroless/")).then(|| image.clone())
    }

    fn final_stage_problems(&self, workspace: &Workspace) -> Vec<(usize, Problem)> {
        let index = self.stages.len() - 1;
        let stage = self.final_stage();
        let mut problems = Vec::new();
        let shell_less = self.shell_less_base(index);
        let mut user = None;
        let mut entrypoint = None;
        for (i, instruction) in stage.instructions.iter().enumerate() {
            let line = instruction.line;
            match &instruction.kind {
                InstructionKind::User(u) => {
                    user = Some((line, expand(u, &self.stage_vars(index, i))))
                }
                InstructionKind::Run { .. } => {
                    if let Some(base) = &shell_less {
                        problems.push((line, Problem::RunWithoutShell(base.clone())));
                    }
                }
                InstructionKind::Entrypoint(command) => {
                    if let Command::Shell(_) = command {
                        problems.push((line, Problem::ShellForm("ENTRYPOINT".into())));
                    }
                    entrypoint = Some((line, command));
                }
                InstructionKind::Cmd(Command::Shell(_)) => {
                    problems.push((line, Problem::ShellForm("CMD".into())));
                }
                InstructionKind::Copy {
                    from: Some(from),
                    sources,
                    dest,
                } => {
                    let Some(source_stage) = self.stage_index(from, index) else {
                        continue;
                    };
                    let into_bin = |source: &str| {
                        let target = if dest.ends_with('/') || sources.len() > 1 {
                            join_path(dest, basename(source))
                        } else {
                            dest.clone()
                        };
                        Path::new(&target)
                            .parent()
                            .and_then(Path::file_name)
                            .is_some_and(|d| d == "bin")
                    };
                    for source in sources.iter().filter(|s| into_bin(s)) {
                        if let Some(problem) =
                            self.copied_binary_problem(source_stage, source, workspace)
                        {
                            problems.push((line, problem));
                        }
                    }
                }
                _ => {}
            }
        }
        match user {
            None => problems.push((stage.line, Problem::NoUser)),
            Some((line, user)) => {
                let (uid, gid) = match user.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (user.as_str(), None),
                };
                let numeric = |s: &str| s.parse::<u32>().ok();
                match (numeric(uid), gid.map(numeric)) {
                    (Some(_), Some(None)) | (None, _) => {
                        problems.push((line, Problem::NonNumericUser(user.clone())));
                    }
                    (Some(0), _) | (_, Some(Some(0))) => {
                        problems.push((line, Problem::RootUser(user.clone())));
                    }
                    _ => {}
                }
            }
        }
        match entrypoint {
            None => problems.push((stage.line, Problem::NoEntrypoint)),
            Some((line, Command::Exec(words))) => {
                let program = words.first().cloned().unwrap_or_default();
                if !program.starts_with('/') {
                    problems.push((line, Problem::EntrypointNotAbsolute(program)));
                } else if !self.shipped_files().contains(&program) {
                    problems.push((line, Problem::EntrypointNotCopied(program)));
                }
            }
            Some((_, Command::Shell(_))) => {}
        }
        problems
    }

    /// Whether stage `stage` produces `source`: a cargo binary of that file name, copied from
    /// the profile's output directory (directly, or by a command naming both that output and
    /// `source` or its directory, such as `install -D target/release/x /out/x`), or a
    /// `go build -o source`. A file inside one of the stage's cache mounts is refused.
    fn copied_binary_problem(
        &self,
        stage: usize,
        source: &str,
        workspace: &Workspace,
    ) -> Option<Problem> {
        let stage_name = self.stages[stage]
            .name
            .clone()
            .unwrap_or_else(|| stage.to_string());
        let commands = self.commands(stage);
        for command in &commands {
            for (name, value) in command.flags {
                if name == "mount"
                    && value.split(',').any(|kv| kv == "type=cache")
                    && let Some(target) = value.split(',').find_map(|kv| {
                        kv.strip_prefix("target=")
                            .or_else(|| kv.strip_prefix("dst="))
                            .or_else(|| kv.strip_prefix("destination="))
                    })
                    && (source == target
                        || source.starts_with(&format!("{}/", target.trim_end_matches('/'))))
                {
                    return Some(Problem::CopyFromCacheMount {
                        stage: stage_name,
                        file: source.to_owned(),
                    });
                }
            }
        }
        let file = basename(source);
        let parent = source.rsplit_once('/').map_or("", |(p, _)| p);
        for (_, build) in self.cargo_builds(stage) {
            if !build.built_bins(workspace).contains(file) {
                continue;
            }
            let output = format!("{}/{file}", build.profile_dir());
            let is_output = |w: &str| w == output || w.ends_with(&format!("/{output}"));
            if is_output(source) {
                return None;
            }
            let moved = commands.iter().any(|SimpleCommand { words, .. }| {
                words.iter().any(|w| is_output(w))
                    && words.iter().any(|w| {
                        w == source || (!parent.is_empty() && w.trim_end_matches('/') == parent)
                    })
            });
            if moved {
                return None;
            }
        }
        let go_built = commands.iter().any(|SimpleCommand { words, .. }| {
            let words: Vec<&str> = words
                .iter()
                .map(String::as_str)
                .skip_while(|w| is_assignment(w) || *w == "env")
                .collect();
            words.starts_with(&["go", "build"])
                && words.windows(2).any(|p| p[0] == "-o" && p[1] == source)
        });
        (!go_built).then(|| Problem::CopiedBinaryNotBuilt {
            stage: stage_name,
            file: source.to_owned(),
        })
    }
}

/// One simple command of a `RUN`: the line of the RUN, its flags, the command's words.
struct SimpleCommand<'a> {
    line: usize,
    flags: &'a [(String, String)],
    words: Vec<String>,
}

/// A `cargo build` command line, as far as the image rules care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CargoBuild {
    /// `--locked` or `--frozen`.
    pub locked: bool,
    /// `--release`.
    pub release: bool,
    /// `--profile NAME`.
    pub profile: Option<String>,
    /// `--target TRIPLE`.
    pub target: Option<String>,
    /// `-p`/`--package`.
    pub packages: Vec<String>,
    /// `--bin`.
    pub bins: Vec<String>,
}

impl CargoBuild {
    /// Reads `cargo [+toolchain] [options] build …` from a command's words (environment
    /// assignments before `cargo` skipped); `None` for any other command.
    pub fn from_words(words: &[String]) -> Option<Self> {
        let mut words = words
            .iter()
            .map(String::as_str)
            .skip_while(|w| is_assignment(w) || *w == "env")
            .peekable();
        if !words
            .next()
            .is_some_and(|w| w == "cargo" || w.ends_with("/cargo"))
        {
            return None;
        }
        let mut build = CargoBuild::default();
        let mut found = false;
        for word in words.by_ref() {
            match word {
                "build" | "b" => {
                    found = true;
                    break;
                }
                "--locked" | "--frozen" => build.locked = true,
                w if w.starts_with('-') || w.starts_with('+') => {}
                _ => return None,
            }
        }
        if !found {
            return None;
        }
        let words: Vec<&str> = words.collect();
        let mut i = 0;
        while let Some(&word) = words.get(i) {
            let (flag, inline) = match word.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v)),
                _ => (word, None),
            };
            let (flag, inline) = match flag.strip_prefix("-p").filter(|r| !r.is_empty()) {
                Some(rest) if !flag.starts_with("--") => ("-p", Some(rest)),
                _ => (flag, inline),
            };
            let mut value = || match inline {
                Some(v) => Some(v.to_owned()),
                None => {
                    i += 1;
                    words.get(i).map(|v| (*v).to_owned())
                }
            };
            match flag {
                "--locked" | "--frozen" => build.locked = true,
                "--release" | "-r" => build.release = true,
                "-p" | "--package" => build.packages.extend(value()),
                "--bin" => build.bins.extend(value()),
                "--profile" => build.profile = value(),
                "--target" => build.target = value(),
                "--features" | "-F" | "--target-dir" | "--manifest-path" | "-j" | "--jobs"
                | "--color" | "--config" | "-Z" => {
                    value();
                }
                _ => {}
            }
            i += 1;
        }
        Some(build)
    }

    /// The output directory under the target directory: `release`, `debug` or the profile's
    /// name, under the target triple when one is given.
    pub fn profile_dir(&self) -> String {
        let profile = match (&self.profile, self.release) {
            (Some(p), _) if p == "dev" || p == "test" => "debug",
            (Some(p), _) if p == "bench" => "release",
            (Some(p), _) => p.as_str(),
            (None, true) => "release",
            (None, false) => "debug",
        };
        match &self.target {
            Some(triple) => format!("{triple}/{profile}"),
            None => profile.to_owned(),
        }
    }

    /// The binaries it builds: its `--bin`s, or every binary of its packages.
    pub fn built_bins(&self, workspace: &Workspace) -> BTreeSet<String> {
        if !self.bins.is_empty() {
            return self.bins.iter().cloned().collect();
        }
        self.packages
            .iter()
            .filter_map(|p| workspace.bins(p))
            .flatten()
            .cloned()
            .collect()
    }

    /// The rules one `cargo build` is held to: locked, existing packages, existing binaries of
    /// those packages (of any member when no package is named).
    pub fn problems(&self, workspace: &Workspace) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !self.locked {
            problems.push(Problem::CargoBuildUnlocked);
        }
        for package in &self.packages {
            if workspace.bins(package).is_none() {
                problems.push(Problem::UnknownPackage(package.clone()));
            }
        }
        let candidates: BTreeSet<&String> = if self.packages.is_empty() {
            workspace.packages.values().flatten().collect()
        } else {
            self.packages
                .iter()
                .filter_map(|p| workspace.bins(p))
                .flatten()
                .collect()
        };
        for bin in &self.bins {
            if !candidates.contains(bin) {
                problems.push(Problem::UnknownBinary(bin.clone()));
            }
        }
        problems
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// `path` resolved against directory `base` (kept as written when absolute).
fn join_path(base: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", base.trim_end_matches('/'))
    }
}

/// `$NAME`, `${NAME}` and `${NAME:-default}` replaced from `vars`; an unknown name stays as
/// written, so a check can see it was not resolved.
fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, default, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => {
                    let inner = &braced[..end];
                    let (name, default) = match inner.split_once(":-") {
                        Some((n, d)) => (n, Some(d)),
                        None => (inner, None),
                    };
                    (name, default, end + 2)
                }
                None => ("", None, 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], None, end)
        };
        match (vars.get(name), default) {
            _ if name.is_empty() => {
                out.push('$');
                rest = after;
                continue;
            }
            (Some(value), _) => out.push_str(value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => out.push_str(&rest[pos..pos + 1 + consumed]),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// Instructions: line of the keyword, keyword (uppercase), arguments with continuation lines
/// joined (the backslash and newline removed, as Docker does) and comment lines inside dropped.
type Logical = (usize, String, String);

fn logical_lines(text: &str) -> Result<Vec<Logical>, (usize, Problem)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).peekable();
    // Parser directives: `# key=value` lines at the very top.
    while let Some(&(number, line)) = lines.peek() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.contains(char::is_whitespace) {
            break;
        }
        match key.as_str() {
            "syntax" | "check" => {}
            "escape" if value.trim() == "\\" => {}
            "escape" => {
                return Err((
                    number,
                    Problem::Unsupported("an escape character other than `\\`".into()),
                ));
            }
            _ => break,
        }
        lines.next();
    }
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut joined = String::new();
        let mut current = line.trim_end();
        loop {
            match current.strip_suffix('\\') {
                Some(head) => {
                    joined.push_str(head);
                    // The next line that is neither blank nor a comment continues it.
                    let next = lines.by_ref().map(|(_, l)| l).find(|l| {
                        let t = l.trim_start();
                        !t.is_empty() && !t.starts_with('#')
                    });
                    match next {
                        Some(next) => current = next.trim_end(),
                        None => break,
                    }
                }
                None => {
                    joined.push_str(current);
                    break;
                }
            }
        }
        let joined = joined.trim();
        let (keyword, args) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((joined, ""));
        out.push((number, keyword.to_ascii_uppercase(), args.trim().to_owned()));
    }
    Ok(out)
}

enum Parsed {
    From { image: String, name: Option<String> },
    Instruction(InstructionKind),
}

fn malformed(instruction: &str, reason: impl Into<String>) -> Problem {
    Problem::Malformed {
        instruction: instruction.to_owned(),
        reason: reason.into(),
    }
}

fn parse_instruction(keyword: &str, args: &str) -> Result<Parsed, Problem> {
    if matches!(keyword, "RUN" | "COPY") && has_heredoc(args) {
        return Err(Problem::Unsupported(format!("a heredoc in {keyword}")));
    }
    let kind = match keyword {
        "FROM" => {
            let (flags, rest) = split_flags(args);
            if let Some((name, _)) = flags.iter().find(|(n, _)| n != "platform") {
                return Err(malformed(keyword, format!("unknown flag --{name}")));
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (image, name) = match words.as_slice() {
                [image] => (*image, None),
                [image, r#as, name] if r#as.eq_ignore_ascii_case("as") => {
                    (*image, Some(name.to_ascii_lowercase()))
                }
                _ => return Err(malformed(keyword, "expected `image [AS name]`")),
            };
            return Ok(Parsed::From {
                image: image.to_owned(),
                name,
            });
        }
        "ARG" => {
            let words = shell_words(args).map_err(|r| malformed(keyword, r))?;
            let [word] = words.as_slice() else {
                return Err(malformed(keyword, "expected one `name[=default]`"));
            };
            match word.split_once('=') {
                Some((name, default)) => InstructionKind::Arg {
                    name: name.to_owned(),
                    default: Some(default.to_owned()),
                },
                None => InstructionKind::Arg {
                    name: word.clone(),
                    default: None,
                },
            }
        }
        "ENV" | "LABEL" => {
            let pairs = key_values(keyword, args)?;
            if keyword == "ENV" {
                InstructionKind::Env(pairs)
            } else {
                InstructionKind::Label(pairs)
            }
        }
        "WORKDIR" if !args.is_empty() => InstructionKind::Workdir(args.to_owned()),
        "USER" if !args.is_empty() && !args.contains(char::is_whitespace) => {
            InstructionKind::User(args.to_owned())
        }
        "WORKDIR" | "USER" => return Err(malformed(keyword, "expected one argument")),
        "RUN" => {
            let (flags, rest) = split_flags(args);
            if let Some((name, _)) = flags
                .iter()
                .find(|(n, _)| !matches!(n.as_str(), "mount" | "network" | "security"))
            {
                return Err(malformed(keyword, format!("unknown flag --{name}")));
            }
            if rest.is_empty() {
                return Err(malformed(keyword, "no command"));
            }
            InstructionKind::Run {
                flags,
                command: command(rest),
            }
        }
        "COPY" => {
            let (flags, rest) = split_flags(args);
            let mut from = None;
            for (name, value) in flags {
                match name.as_str() {
                    "from" => from = Some(value),
                    "chown" | "chmod" | "link" => {}
                    _ => return Err(malformed(keyword, format!("unsupported flag --{name}"))),
                }
            }
            let mut words = match command(rest) {
                Command::Exec(words) => words,
                Command::Shell(text) => shell_words(&text).map_err(|r| malformed(keyword, r))?,
            };
            let Some(dest) = words.pop().filter(|_| !words.is_empty()) else {
                return Err(malformed(keyword, "expected `source … dest`"));
            };
            InstructionKind::Copy {
                from,
                sources: words,
                dest,
            }
        }
        "ENTRYPOINT" | "CMD" if args.is_empty() => return Err(malformed(keyword, "no command")),
        "ENTRYPOINT" => InstructionKind::Entrypoint(command(args)),
        "CMD" => InstructionKind::Cmd(command(args)),
        "EXPOSE" | "VOLUME" | "STOPSIGNAL" => InstructionKind::Other {
            keyword: keyword.to_owned(),
            args: args.to_owned(),
        },
        "ADD" | "ONBUILD" | "SHELL" | "HEALTHCHECK" | "MAINTAINER" => {
            return Err(Problem::Unsupported(keyword.to_owned()));
        }
        _ => return Err(Problem::UnknownInstruction(keyword.to_owned())),
    };
    Ok(Parsed::Instruction(kind))
}

/// A BuildKit heredoc (`<<EOF`, `<<-EOF`, `<<"EOF"`), which this checker does not read.
fn has_heredoc(args: &str) -> bool {
    args.match_indices("<<").any(|(i, _)| {
        let after = args[i + 2..].trim_start_matches('-');
        let after = after.trim_start_matches(['"', '\'']);
        after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
    })
}

/// Leading `--name=value` (or `--name`) flags, then the rest.
fn split_flags(args: &str) -> (Vec<(String, String)>, &str) {
    let mut flags = Vec::new();
    let mut rest = args.trim_start();
    while let Some(flag) = rest.strip_prefix("--") {
        let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
        let (name, value) = flag[..end].split_once('=').unwrap_or((&flag[..end], ""));
        flags.push((name.to_ascii_lowercase(), value.to_owned()));
        rest = flag[end..].trim_start();
    }
    (flags, rest)
}

/// Exec form if the arguments are a JSON array of strings (as Docker decides), else shell form.
fn command(args: &str) -> Command {
    if args.starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(args)
    {
        return Command::Exec(words);
    }
    Command::Shell(args.to_owned())
}

/// `key=value …` pairs (values may be quoted), or the legacy `key value` form.
fn key_values(keyword: &str, args: &str) -> Result<Vec<(String, String)>, Problem> {
    let words = shell_words(args).map_err(|r| malformed(keyword, r))?;
    if words.first().is_some_and(|w| !w.contains('=')) {
        let (key, value) = args
            .split_once(char::is_whitespace)
            .ok_or_else(|| malformed(keyword, "expected `key=value`"))?;
        return Ok(vec![(key.to_owned(), value.trim().to_owned())]);
    }
    let pairs = words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| malformed(keyword, format!("`{w}` is not key=value")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if pairs.is_empty() {
        return Err(malformed(keyword, "expected `key=value`"));
    }
    Ok(pairs)
}

/// Whitespace-separated words with single and double quotes and backslash escapes removed.
fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let commands = lex(text, false)?;
    Ok(commands.into_iter().flatten().collect())
}

/// The simple commands of a shell command line: words split at `&&`, `||`, `;`, `|`, `&`,
/// parentheses and newlines. Enough to find `cargo build`, `go build` and `install` in a RUN;
/// an unterminated quote leaves the line as one command of its whitespace-split words.
fn shell_commands(text: &str) -> Vec<Vec<String>> {
    lex(text, true).unwrap_or_else(|_| vec![text.split_whitespace().map(str::to_owned).collect()])
}

fn lex(text: &str, operators: bool) -> Result<Vec<Vec<String>>, String> {
    let mut commands = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut chars = text.chars().peekable();
    let end_word = |word: &mut Option<String>, commands: &mut Vec<Vec<String>>| {
        if let (Some(w), Some(current)) = (word.take(), commands.last_mut()) {
            current.push(w);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unterminated \"".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            c if operators && matches!(c, '&' | '|' | ';' | '(' | ')' | '\n') => {
                end_word(&mut word, &mut commands);
                if matches!(c, '&' | '|') && chars.peek() == Some(&c) {
                    chars.next();
                }
                if commands.last().is_some_and(|c| !c.is_empty()) {
                    commands.push(Vec::new());
                }
            }
            c if c.is_whitespace() => end_word(&mut word, &mut commands),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut commands);
    commands.retain(|c| !c.is_empty());
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> Workspace {
        Workspace::from_packages([
            ("neurodata-abci", vec!["neurodata-abci"]),
            ("neurodata-worker", vec!["neurodata-worker"]),
            ("neurodata-trainer", vec!["trainer", "kernel-digest"]),
            ("neurodata-proto", vec![]),
        ])
    }

    const BUILD: &str = "FROM rust:1.95.0-bookworm AS build\n\
        WORKDIR /src\n\
        COPY . .\n\
        RUN --mount=type=cache,target=/src/target \\\n    \
        cargo build --release --locked -p neurodata-abci --bin neurodata-abci \\\n \
        && install -D -m 0755 target/release/neurodata-abci /out/neurodata-abci\n";

    const RUNTIME: &str = "FROM gcr.io/distroless/cc-debian12:nonroot\n\
        COPY --from=build /out/neurodata-abci /usr/local/bin/neurodata-abci\n\
        USER 10001:10001\n\
        ENTRYPOINT [\"/usr/local/bin/neurodata-abci\"]\n";

    fn problems(text: &str) -> Vec<Problem> {
        let dockerfile =
            Dockerfile::parse(Path::new("test.Dockerfile"), text).expect("the snippet parses");
        dockerfile
            .check(&workspace())
            .into_iter()
            .map(|e| e.problem)
            .collect()
    }

    fn parse_problem(text: &str) -> Problem {
        Dockerfile::parse(Path::new("test.Dockerfile"), text)
            .expect_err("the snippet is refused")
            .problem
    }

    fn good() -> String {
        format!("{BUILD}\n{RUNTIME}")
    }

    #[test]
    fn good_image_passes_every_rule() {
        assert_eq!(problems(&good()), vec![]);
    }

    #[test]
    fn continuation_lines_are_joined_and_comments_inside_dropped() {
        let text = "# syntax=docker/dockerfile:1.7\nFROM a:1\nRUN echo a \\\n# a comment\n\n  && echo b\nUSER 1\n";
        let dockerfile = Dockerfile::parse(Path::new("t"), text).expect("parses");
        let stage = dockerfile.final_stage();
        assert_eq!(stage.line, 2);
        assert_eq!(stage.instructions[0].line, 3);
        assert_eq!(
            stage.instructions[0].kind,
            InstructionKind::Run {
                flags: vec![],
                command: Command::Shell("echo a   && echo b".into()),
            }
        );
        assert_eq!(stage.instructions[1].line, 7);
    }

    #[test]
    fn errors_carry_file_and_line() {
        let error = Dockerfile::parse(Path::new("x.Dockerfile"), "FROM a:1\n\nFROB b\n")
            .expect_err("unknown instruction");
        assert_eq!(error.line, 3);
        assert_eq!(
            error.to_string(),
            "x.Dockerfile:3: unknown instruction `FROB`"
        );
    }

    #[test]
    fn heredocs_add_and_other_escapes_are_refused_as_unsupported() {
        for text in [
            "FROM a:1\nRUN <<EOF\necho\nEOF\n",
            "FROM a:1\nCOPY <<-\"EOF\" /x\n",
            "FROM a:1\nADD x /y\n",
            "# escape=`\nFROM a:1\n",
            "FROM a:1\nSHELL [\"/bin/bash\", \"-c\"]\n",
        ] {
            assert!(
                matches!(parse_problem(text), Problem::Unsupported(_)),
                "{text:?} must be refused as unsupported"
            );
        }
        // A here-string is not a heredoc.
        Dockerfile::parse(Path::new("t"), "FROM a:1\nRUN cat <<< 1\n").expect("parses");
    }

    #[test]
    fn instructions_before_from_other_than_arg_are_refused() {
        assert_eq!(
            parse_problem("RUN echo\nFROM a:1\n"),
            Problem::BeforeFrom("RUN".into())
        );
        assert_eq!(parse_problem("ARG X=1\n"), Problem::NoStage);
    }

    #[test]
    fn duplicate_stage_names_are_refused() {
        assert_eq!(
            parse_problem("FROM a:1 AS b\nFROM a:1 AS B\n"),
            Problem::DuplicateStage("b".into())
        );
    }

    #[test]
    fn base_images_must_be_pinned_by_tag_or_digest() {
        let with_base = |base: &str| problems(&good().replacen("rust:1.95.0-bookworm", base, 1));
        assert_eq!(
            with_base("rust"),
            vec![Problem::UntaggedImage("rust".into())]
        );
        assert_eq!(
            with_base("rust:latest"),
            vec![Problem::LatestTag("rust:latest".into())]
        );
        assert_eq!(
            with_base("registry:5000/rust"),
            vec![Problem::UntaggedImage("registry:5000/rust".into())]
        );
        assert_eq!(with_base("registry:5000/rust:1.95"), vec![]);
        assert_eq!(with_base("rust@sha256:0123abcd"), vec![]);
    }

    #[test]
    fn global_args_resolve_in_from_and_unresolved_ones_are_refused() {
        let pinned = format!(
            "ARG RUST=1.95.0\n{}",
            good().replacen("rust:1.95.0-", "rust:${RUST}-", 1)
        );
        assert_eq!(problems(&pinned), vec![]);
        let unresolved = good().replacen("rust:1.95.0-", "rust:${RUST}-", 1);
        assert_eq!(
            problems(&unresolved),
            vec![Problem::UnresolvedImage("rust:${RUST}-bookworm".into())]
        );
    }

    #[test]
    fn copy_from_must_name_an_earlier_stage() {
        let later = good().replace("--from=build", "--from=runtime");
        assert!(problems(&later).contains(&Problem::CopyFromUnknownStage("runtime".into())));
        let image = good().replace("--from=build", "--from=busybox:1.36");
        assert!(problems(&image).contains(&Problem::CopyFromUnknownStage("busybox:1.36".into())));
        let by_index = good().replace("--from=build", "--from=0");
        assert_eq!(problems(&by_index), vec![]);
    }

    #[test]
    fn cargo_build_must_be_locked() {
        let text = good().replace(" --locked", "");
        assert_eq!(problems(&text), vec![Problem::CargoBuildUnlocked]);
        let frozen = good().replace("--locked", "--frozen");
        assert_eq!(problems(&frozen), vec![]);
    }

    #[test]
    fn cargo_build_must_name_workspace_packages_and_their_binaries() {
        let package = good().replace("-p neurodata-abci", "-p neurodata-abcd");
        assert_eq!(
            problems(&package),
            vec![
                Problem::UnknownPackage("neurodata-abcd".into()),
                Problem::UnknownBinary("neurodata-abci".into()),
            ]
        );
        let bin = good().replace("--bin neurodata-abci", "--bin trainer");
        assert!(problems(&bin).contains(&Problem::UnknownBinary("trainer".into())));
        let both = good().replace(
            "-p neurodata-abci --bin neurodata-abci",
            "-p neurodata-abci --bin neurodata-abci -p neurodata-trainer --bin trainer",
        );
        assert_eq!(problems(&both), vec![]);
    }

    #[test]
    fn cargo_build_arguments_are_read_in_all_their_spellings() {
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let build = CargoBuild::from_words(&words(
            "CARGO_INCREMENTAL=0 cargo +1.95 build --package=a -pb --bin=x --profile dev --locked",
        ))
        .expect("a cargo build");
        assert_eq!(build.packages, vec!["a", "b"]);
        assert_eq!(build.bins, vec!["x"]);
        assert!(build.locked);
        assert_eq!(build.profile_dir(), "debug");
        assert_eq!(CargoBuild::from_words(&words("cargo test --locked")), None);
        assert_eq!(CargoBuild::from_words(&words("echo cargo build")), None);
    }

    #[test]
    fn the_final_stage_must_copy_the_binary_its_stage_builds() {
        let other = good().replace(
            "install -D -m 0755 target/release/neurodata-abci",
            "install -D -m 0755 target/release/neurodata-worker",
        );
        assert_eq!(
            problems(&other),
            vec![Problem::CopiedBinaryNotBuilt {
                stage: "build".into(),
                file: "/out/neurodata-abci".into(),
            }]
        );
        let debug = good().replace("target/release/", "target/debug/");
        assert!(matches!(
            problems(&debug).as_slice(),
            [Problem::CopiedBinaryNotBuilt { .. }]
        ));
        // Copied straight from the target directory, when that is not a cache mount.
        let direct = good()
            .replace("--mount=type=cache,target=/src/target ", "")
            .replace(
                "/out/neurodata-abci /usr",
                "/src/target/release/neurodata-abci /usr",
            );
        assert_eq!(problems(&direct), vec![]);
    }

    #[test]
    fn the_final_stage_cannot_copy_out_of_a_cache_mount() {
        let text = good().replace(
            "/out/neurodata-abci /usr",
            "/src/target/release/neurodata-abci /usr",
        );
        assert_eq!(
            problems(&text),
            vec![Problem::CopyFromCacheMount {
                stage: "build".into(),
                file: "/src/target/release/neurodata-abci".into(),
            }]
        );
    }

    #[test]
    fn a_go_build_output_counts_as_built() {
        let text = "FROM golang:1.24-bookworm AS build\n\
            RUN CGO_ENABLED=0 go build -trimpath -o /out/cometbft example.com/cmd/cometbft\n\
            FROM gcr.io/distroless/static-debian12:nonroot\n\
            COPY --from=build /out/cometbft /usr/local/bin/cometbft\n\
            USER 10001:10001\n\
            ENTRYPOINT [\"/usr/local/bin/cometbft\"]\n";
        assert_eq!(problems(text), vec![]);
        assert_eq!(
            problems(&text.replace("-o /out/cometbft", "-o /out/other")),
            vec![Problem::CopiedBinaryNotBuilt {
                stage: "build".into(),
                file: "/out/cometbft".into(),
            }]
        );
    }

    #[test]
    fn the_final_stage_must_run_as_a_numeric_non_root_user() {
        assert_eq!(
            problems(&good().replace("USER 10001:10001\n", "")),
            vec![Problem::NoUser]
        );
        assert_eq!(
            problems(&good().replace("USER 10001:10001", "USER nonroot")),
            vec![Problem::NonNumericUser("nonroot".into())]
        );
        assert_eq!(
            problems(&good().replace("USER 10001:10001", "USER 10001:staff")),
            vec![Problem::NonNumericUser("10001:staff".into())]
        );
        assert_eq!(
            problems(&good().replace("USER 10001:10001", "USER 0")),
            vec![Problem::RootUser("0".into())]
        );
        assert_eq!(
            problems(&good().replace("USER 10001:10001", "USER 10001:0")),
            vec![Problem::RootUser("10001:0".into())]
        );
        // A USER in the build stage does not count for the image.
        let build_only = good()
            .replace("USER 10001:10001\n", "")
            .replace("WORKDIR /src", "USER 10001\nWORKDIR /src");
        assert_eq!(problems(&build_only), vec![Problem::NoUser]);
    }

    #[test]
    fn no_run_in_a_shell_less_final_stage() {
        let text = good().replace("USER 10001:10001", "RUN echo hi\nUSER 10001:10001");
        assert_eq!(
            problems(&text),
            vec![Problem::RunWithoutShell(
                "gcr.io/distroless/cc-debian12:nonroot".into()
            )]
        );
        let slim = text.replace(
            "gcr.io/distroless/cc-debian12:nonroot",
            "debian:bookworm-slim",
        );
        assert_eq!(problems(&slim), vec![]);
    }

    #[test]
    fn entrypoint_and_cmd_must_be_exec_form() {
        let shell = good().replace(
            "ENTRYPOINT [\"/usr/local/bin/neurodata-abci\"]",
            "ENTRYPOINT /usr/local/bin/neurodata-abci",
        );
        assert_eq!(
            problems(&shell),
            vec![Problem::ShellForm("ENTRYPOINT".into())]
        );
        let cmd = format!("{}CMD --home /data\n", good());
        assert_eq!(problems(&cmd), vec![Problem::ShellForm("CMD".into())]);
        let exec_cmd = format!("{}CMD [\"--home\", \"/data\"]\n", good());
        assert_eq!(problems(&exec_cmd), vec![]);
    }

    #[test]
    fn entrypoint_must_be_an_absolute_copied_file() {
        assert_eq!(
            problems(&good().replace("ENTRYPOINT [\"/usr/local/bin/", "ENTRYPOINT [\"")),
            vec![Problem::EntrypointNotAbsolute("neurodata-abci".into())]
        );
        assert_eq!(
            problems(&good().replace("[\"/usr/local/bin/neurodata-abci\"]", "[\"/bin/sh\"]")),
            vec![Problem::EntrypointNotCopied("/bin/sh".into())]
        );
        let no_entrypoint = good().replace("ENTRYPOINT [\"/usr/local/bin/neurodata-abci\"]\n", "");
        assert_eq!(problems(&no_entrypoint), vec![Problem::NoEntrypoint]);
        // Copied into a directory (trailing slash), relative to WORKDIR.
        let into_dir = good().replace(
            "COPY --from=build /out/neurodata-abci /usr/local/bin/neurodata-abci",
            "WORKDIR /usr/local\nCOPY --from=build /out/neurodata-abci bin/",
        );
        let dockerfile = Dockerfile::parse(Path::new("t"), &into_dir).expect("parses");
        assert_eq!(
            dockerfile.shipped_files(),
            vec!["/usr/local/bin/neurodata-abci".to_owned()]
        );
        assert_eq!(problems(&into_dir), vec![]);
    }

    #[test]
    fn labels_and_args_are_read_with_their_variables() {
        let text = "ARG V=v1.2.3\nFROM a:1\nARG V\nLABEL a=\"x y\" \\\n  b=${V}\nUSER 1\n";
        let dockerfile = Dockerfile::parse(Path::new("t"), text).expect("parses");
        assert_eq!(dockerfile.global_arg("V"), Some("v1.2.3"));
        assert_eq!(dockerfile.label("a").as_deref(), Some("x y"));
        assert_eq!(dockerfile.label("b").as_deref(), Some("v1.2.3"));
        assert_eq!(dockerfile.label("c"), None);
    }

    #[test]
    fn shell_commands_split_at_operators_and_respect_quotes() {
        assert_eq!(
            shell_commands("a 'b && c' && d \"e f\"; g | h"),
            vec![
                vec!["a".to_owned(), "b && c".to_owned()],
                vec!["d".to_owned(), "e f".to_owned()],
                vec!["g".to_owned()],
                vec!["h".to_owned()],
            ]
        );
    }

    #[test]
    fn workspace_loads_members_and_automatic_binaries() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace root");
        let workspace = Workspace::load(root).expect("the workspace loads");
        let bins = |p: &str| workspace.bins(p).cloned().unwrap_or_default();
        assert!(bins("neurodata-abci").contains("neurodata-abci"));
        assert!(
            bins("ndctl").contains("ndctl"),
            "src/main.rs is the package's binary"
        );
        assert!(bins("neurodata-trainer").contains("trainer"));
        assert!(
            bins("neurodata-trainer").contains("kernel-digest"),
            "src/bin/*.rs"
        );
        assert!(bins("neurodata-proto").is_empty());
    }
}
