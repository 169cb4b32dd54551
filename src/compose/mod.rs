//! Compose v3 stack files: parsing, interpolation and validation into service definitions.
//!
//! [`parse_stack`] takes the text of one or more files (like `docker stack deploy -c a.yml -c
//! b.yml`) and the environment to interpolate from, and returns [`ServiceDef`]s plus warnings. It
//! does no IO: the caller reads the files and passes its environment.
//!
//! # Pipeline
//!
//! For each file, in order:
//! 1. **Size check** before anything else: over [`MAX_FILE_BYTES`] is refused unparsed.
//! 2. **Shape check** (`shape.rs`): one linear pass over the text that refuses nesting deeper
//!    than 64 levels and more than 200,000 tokens, at the line where the limit is crossed, before
//!    libyaml (whose cost grows with depth times tokens) sees the file.
//! 3. **Parse** into a YAML tree with a node budget, so alias bombs fail in milliseconds
//!    (`load.rs`).
//! 4. **Merge keys** (`<<: *defaults`) are applied; anchors are typically declared under `x-*`.
//! 5. **Top level** is checked: `version`, `services`, `networks`, `volumes`, `configs`,
//!    `secrets` and `x-*` are allowed (`x-*` is dropped silently), anything else is an error.
//! 6. **Interpolation** of `$VAR` forms in every string value (`interpolate.rs`).
//! 7. **List forms** of `environment`, `labels`, `deploy.labels` and `networks` become mappings.
//!
//! Then the files are merged: later files override keys of earlier ones, mappings merge key by
//! key (so one variable or label can be overridden), and everything else, **including lists such
//! as `ports`, `volumes`, `command` and `placement.constraints`, is replaced whole** (docker merges
//! ports and volumes by target; shoal keeps the simpler rule). The merged tree is deserialized
//! into `model.rs` (with `serde_path_to_error` for the key path of type errors and
//! `serde_ignored` for keys it has no field for: a key compose defines becomes a warning with its
//! line, any other key an error with a did-you-mean hint, `model::KEYS`) and converted
//! (`convert.rs`, `deploy.rs`, `mounts.rs`, `image.rs`). Warnings get their file and line at the
//! end, like errors.
//!
//! # Why interpolation happens after parsing
//!
//! Docker compose substitutes variables in parsed values too. Doing it on the text line by line
//! would keep line numbers but shift columns, and, worse, a value such as `a: b` or `#x` would
//! change the YAML structure. On values, every position in the original text stays exact. The
//! price: `replicas: ${N}` arrives as the string `"3"`, so numeric and boolean fields accept
//! numeric strings (`replicas: "3"` is accepted too).
//!
//! # Error positions
//!
//! The merged tree has no positions, so a failure carries a key path and the path is looked up
//! again in the original text (`locate.rs`); values that came through a `<<` merge point at the
//! anchor. When a path is in several files, the last file that has it is named (its value won).
//!
//! # Names
//!
//! Services become `STACK_SERVICE`. As in Swarm, networks and named volumes are stack-scoped:
//! `front` in stack `app` is `app_front`, unless declared `external: true` (used as is) or given a
//! `name:`. A service that lists no network gets no attachment here: the deploy attaches it to
//! `STACK_default` (as Swarm does; `desired::state`); one that lists `default` gets
//! `STACK_default`. Declared networks come out as [`StackFile::network_defs`], to send with the
//! services. Relative bind sources (`./data`, `data` with `type: bind`) are resolved against the
//! first file's directory and `~` against the home directory, as Docker's loader does, when the
//! caller gives them ([`parse_stack_in`]); [`parse_stack`] passes them on unchanged.
//!
//! # Testing
//!
//! Unit tests sit next to each small parser; `tests/compose.rs` and `tests/compose_errors.rs` run
//! whole files (fixtures in `tests/fixtures/compose/`), `tests/compose_props.rs` checks with
//! proptest that no input panics. `fuzz/` is a cargo-fuzz project outside the main build; on the
//! stable toolchain, from the repository root:
//!
//! ```text
//! cargo install cargo-fuzz   # once
//! cargo fuzz run --sanitizer none stack_file -- -max_total_time=30
//! # seeded with the fixtures (new inputs go to the first directory only):
//! mkdir -p fuzz/corpus/stack_file && cargo fuzz run --sanitizer none stack_file \
//!     fuzz/corpus/stack_file tests/fixtures/compose -- -max_total_time=30
//! ```
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run stack_file ...` adds AddressSanitizer (nightly flags on the
//! stable compiler), about 8x slower; there is no unsafe code here for it to watch.

mod constraint;
mod convert;
mod deploy;
mod error;
mod image;
mod interpolate;
mod load;
mod locate;
mod model;
mod mounts;
mod options;
mod ports;
mod shape;
mod units;
mod words;

use std::collections::BTreeMap;

use yaml_serde::Value;

pub use self::error::{ComposeError, Location};
pub use self::options::FileContext;
// The CLI's `service update` flags take the same values as stack files.
use self::error::{Failure, KeyPath, Segment, Warning};
use self::interpolate::Interpolator;
use self::load::key_text;
use self::model::Lenient;
use self::model::{External, Ignored, RawDeclaration, RawNetwork, RawStack};
pub(crate) use self::{
    constraint::{parse_constraint, parse_spread},
    units::{duration_ms, memory_bytes, thousandths},
    words::split as split_words,
};
pub use shoal_core::desired::spec::{NetworkDef, ServiceDef};

/// A `service update --publish-add` value: the short port syntax of stack files
/// (`8080:80`, `8080:80/udp`, ranges), published in ingress mode. The host-IP and empty-port
/// forms that a stack file accepts with a warning are refused here, where nobody would see it.
pub(crate) fn parse_publish(
    text: &str,
) -> Result<Vec<shoal_core::desired::spec::PortSpec>, String> {
    let short = ports::parse_short(text)?;
    if let Some(note) = short.notes.first() {
        return Err(format!("{text}: {note}"));
    }
    if short.ports.iter().any(|p| p.published.is_none()) {
        return Err(format!(
            "{text}: give the published port, as PUBLISHED:TARGET"
        ));
    }
    Ok(short.ports)
}

/// Checks an image reference by Docker's grammar (for `service update --image`).
pub(crate) fn check_image(reference: &str) -> Result<String, String> {
    image::check(reference).map(|()| reference.to_string())
}

/// Largest stack file accepted, checked before parsing.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// Most text variable substitution may produce across all files.
const MAX_INTERPOLATED_BYTES: usize = 64 << 20;

/// Top-level keys besides `x-*`.
const TOP_LEVEL: [&str; 6] = [
    "version", "services", "networks", "volumes", "configs", "secrets",
];

/// A parsed stack: its services, what it declares, and what was ignored along the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackFile {
    /// The services, in the order of the (first) file that declares them.
    pub services: Vec<ServiceDef>,
    /// Top-level `networks`, in file order.
    pub networks: Vec<Declared>,
    /// Top-level `volumes`, in file order.
    pub volumes: Vec<Declared>,
    /// Human-readable warnings, each naming a key path: ignored keys (one per key), unset
    /// variables (one per variable), environment entries dropped for lack of a value...
    pub warnings: Vec<String>,
    /// The top-level networks with their settings, in file order: what the deploy creates
    /// (those its services use) or checks (external ones).
    pub network_defs: Vec<NetworkDef>,
}

/// A network or volume declared at the top level of a stack file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// The key in the file (`front`).
    pub key: String,
    /// The real name: `STACK_KEY`, or the `name:` given, or the key itself when external.
    pub name: String,
    /// Declared `external: true`: it must exist already; the stack does not own it.
    pub external: bool,
}

/// Parses, interpolates, merges and validates stack files into service definitions.
///
/// `files` are `(name for messages, text)` pairs merged in order, later files overriding
/// earlier ones (see the module docs for how). `env` is the environment for `$VAR`
/// interpolation and for `environment` entries that name a variable without a value.
///
/// # Errors
///
/// Any problem in any file, as a [`ComposeError`] naming the file, line, column and key path.
/// Never panics, whatever the input.
pub fn parse_stack(
    stack_name: &str,
    files: &[(String, String)],
    env: &BTreeMap<String, String>,
) -> Result<StackFile, ComposeError> {
    parse_stack_in(stack_name, files, env, &FileContext::none())
}

/// [`parse_stack`] for files that live somewhere: relative bind sources and `env_file` paths
/// are resolved against `context.base_dir` (the first file's directory, as Docker's loader
/// does), `~` against `context.home`, and env files are read with `context.read`.
pub fn parse_stack_in(
    stack_name: &str,
    files: &[(String, String)],
    env: &BTreeMap<String, String>,
    context: &FileContext<'_>,
) -> Result<StackFile, ComposeError> {
    if let Err(reason) = convert::check_name(stack_name) {
        return Err(ComposeError::StackName {
            name: stack_name.to_string(),
            reason,
        });
    }
    if files.is_empty() {
        return Err(ComposeError::NoFiles);
    }
    for (name, text) in files {
        if text.len() > MAX_FILE_BYTES {
            return Err(ComposeError::TooLarge {
                file: name.clone(),
                size: text.len(),
                limit: MAX_FILE_BYTES,
            });
        }
    }
    let mut warnings = Vec::new();
    let mut interpolator = Interpolator::new(env, MAX_INTERPOLATED_BYTES);
    let mut merged: Option<Value> = None;
    for (i, (name, text)) in files.iter().enumerate() {
        shape::check(text).map_err(|e| ComposeError::Syntax {
            at: Location {
                file: name.clone(),
                line: Some(e.line),
                column: Some(e.column),
            },
            message: e.message,
        })?;
        let doc = load::parse(text).map_err(|e| syntax_error(name, &e))?;
        let mut own = Vec::new();
        let doc = prepare(doc, &mut interpolator, &mut own)
            .map_err(|f| located(files, Failure { file: Some(i), ..f }))?;
        warnings.extend(own.into_iter().map(|w| Warning { file: Some(i), ..w }));
        match &mut merged {
            None => merged = Some(doc),
            Some(base) => load::merge_into(base, doc),
        }
    }
    let merged = merged.unwrap_or(Value::Null);
    let (mut stack, warnings) =
        build(stack_name, merged, env, warnings, context).map_err(|f| located(files, f))?;
    stack.warnings = render_warnings(files, warnings);
    Ok(stack)
}

/// Text the warnings may re-read in all to find their lines: every warning of a normal file gets
/// its line, and a huge file with thousands of ignored keys cannot make that take seconds.
const WARNING_LOOKUP_BUDGET: usize = 32 << 20;

/// `file:line:col: path: message` for each warning, in order; a warning whose line is not found
/// (or once the lookup budget is spent) names the file alone.
fn render_warnings(files: &[(String, String)], warnings: Vec<Warning>) -> Vec<String> {
    let mut budget = WARNING_LOOKUP_BUDGET;
    let mut out: Vec<String> = Vec::with_capacity(warnings.len());
    for w in warnings {
        let candidates = candidate_files(files, w.file);
        let cost: usize = candidates.iter().map(|&i| files[i].1.len()).sum();
        let at = if cost <= budget {
            budget -= cost;
            position(files, &candidates, &w.path.0)
        } else {
            unlocated(files, &candidates)
        };
        let line = format!("{at}: {}{}", path_prefix(&w.path), w.message);
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

fn path_prefix(path: &KeyPath) -> String {
    if path.0.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Steps 3 to 6 of the pipeline for one file.
fn prepare(
    mut doc: Value,
    interpolator: &mut Interpolator<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Value, Failure> {
    let root = KeyPath::root();
    load::resolve_merges(&mut doc, &root)?;
    let Value::Mapping(map) = &mut doc else {
        return Err(Failure::at(
            &root,
            "the top level must be a mapping with a `services` key",
        ));
    };
    for key in map.keys().map(key_text) {
        if !key.starts_with("x-") && !TOP_LEVEL.contains(&key.as_str()) {
            return Err(Failure::at(
                &root.key(&key),
                "unknown top-level key (expected version, services, networks, volumes, \
                 configs, secrets or x-*)",
            ));
        }
    }
    // Extensions are only templates for anchors, already expanded; substituting in them would
    // only duplicate warnings.
    map.retain(|k, _| !key_text(k).starts_with("x-"));
    interpolator.document(&mut doc, &root, warnings)?;
    load::normalize_lists(&mut doc);
    Ok(doc)
}

/// Deserializes and converts the merged tree; the stack's `warnings` are left empty, the
/// warnings returned beside it are still to be located.
fn build(
    stack: &str,
    merged: Value,
    env: &BTreeMap<String, String>,
    mut warnings: Vec<Warning>,
    files: &FileContext<'_>,
) -> Result<(StackFile, Vec<Warning>), Failure> {
    let mut ignored: Vec<KeyPath> = Vec::new();
    let mut record = |p: serde_ignored::Path<'_>| ignored.push(ignored_path(&p));
    let raw: RawStack =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(merged, &mut record))
            .map_err(|e| Failure {
                path: tracked_path(e.path()),
                message: e.into_inner().to_string(),
                file: None,
            })?;
    // Swarm refuses a file with a key compose does not define; a typo such as `enviroment`
    // or `deploy.replica` must not deploy with defaults.
    for path in ignored {
        match model::classify_ignored(&path) {
            Ignored::Extension => {}
            Ignored::Unsupported => {
                warnings.push(Warning::at(&path, "not supported by shoal, ignored"));
            }
            Ignored::Unknown(message) => return Err(Failure::at(&path, message)),
        }
    }

    let root = KeyPath::root();
    let (networks, network_defs) =
        network_declarations(stack, &root.key("networks"), raw.networks, &mut warnings)?;
    let volumes = declarations(stack, &root.key("volumes"), raw.volumes)?;
    let by_key = |d: &[Declared]| -> BTreeMap<String, Declared> {
        d.iter().map(|d| (d.key.clone(), d.clone())).collect()
    };
    let (network_map, volume_map) = (by_key(&networks), by_key(&volumes));
    let services_path = root.key("services");
    let raw_services = raw.services.map(|e| e.0).unwrap_or_default();
    if raw_services.is_empty() {
        return Err(Failure::at(
            &services_path,
            "at least one service is required",
        ));
    }
    let mut ctx = convert::Ctx::new(stack, env, &network_map, &volume_map, &mut warnings, files);
    let mut services = Vec::with_capacity(raw_services.len());
    for (name, service) in raw_services {
        let path = services_path.key(&name);
        services.push(convert::service(&mut ctx, &path, &name, service)?);
    }
    let stack = StackFile {
        services,
        networks,
        volumes,
        warnings: Vec::new(),
        network_defs,
    };
    Ok((stack, warnings))
}

/// Top-level networks with their real names, and their settings.
fn network_declarations(
    stack: &str,
    path: &KeyPath,
    raw: Option<model::Entries<Option<RawNetwork>>>,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<Declared>, Vec<NetworkDef>), Failure> {
    use shoal_core::desired::spec::{NetworkSpec, OVERLAY_DRIVER};
    let entries = raw.map(|e| e.0).unwrap_or_default();
    let mut plain = Vec::new();
    let mut settings = Vec::new();
    for (key, net) in entries {
        let net = net.unwrap_or_default();
        plain.push((
            key.clone(),
            Some(RawDeclaration {
                external: net.external,
                name: net.name,
            }),
        ));
        let at = path.key(&key);
        let mut spec = NetworkSpec {
            driver: OVERLAY_DRIVER.to_string(),
            attachable: net.attachable.is_some_and(|Lenient(b)| b),
            internal: net.internal.is_some_and(|Lenient(b)| b),
            ..NetworkSpec::default()
        };
        match net.driver.as_deref() {
            None | Some("overlay") => {}
            Some(other) => warnings.push(Warning::at(
                &at.key("driver"),
                format!(
                    "driver {other:?} taken as \"overlay\": shoal's networks span the cluster \
                     as overlay ones do"
                ),
            )),
        }
        if let Some(labels) = net.labels {
            spec.labels = convert::pairs(&at.key("labels"), labels)?
                .into_iter()
                .map(|(k, v, _)| (k, v.unwrap_or_default()))
                .collect();
        }
        if let Some(ipam) = net.ipam {
            let ipam_at = at.key("ipam");
            if let Some(driver) = ipam.driver.filter(|d| d != "default") {
                warnings.push(Warning::at(
                    &ipam_at.key("driver"),
                    format!("IPAM driver {driver:?} ignored: shoal allocates addresses itself"),
                ));
            }
            let configs = ipam.config.unwrap_or_default();
            for (i, config) in configs.iter().enumerate() {
                let Some(subnet) = &config.subnet else {
                    continue;
                };
                let sub_at = ipam_at.key("config").index(i).key("subnet");
                if i > 0 {
                    warnings.push(Warning::at(
                        &sub_at,
                        "only the first subnet is used (one IPv4 range per network)",
                    ));
                    continue;
                }
                let parsed: shoal_core::net::Ipv4Net =
                    subnet.parse().map_err(|e: shoal_core::net::Ipv4NetError| {
                        Failure::at(&sub_at, e.to_string())
                    })?;
                let (min, max) = (
                    shoal_core::net::layout::MIN_SUBNET_LEN,
                    shoal_core::net::layout::MAX_SUBNET_LEN,
                );
                if !(min..=max).contains(&parsed.prefix_len()) {
                    return Err(Failure::at(
                        &sub_at,
                        format!(
                            "give a /{min} to /{max}: each node takes a /24 of it, and the last \
                             /24 holds the services' virtual addresses"
                        ),
                    ));
                }
                spec.subnet = Some(parsed);
            }
        }
        settings.push(spec);
    }
    let declared = declarations(stack, path, Some(model::Entries(plain)))?;
    let defs = declared
        .iter()
        .zip(settings)
        .map(|(d, spec)| NetworkDef {
            name: d.name.clone(),
            external: d.external,
            spec,
        })
        .collect();
    Ok((declared, defs))
}

/// Top-level networks or volumes with their real names.
fn declarations(
    stack: &str,
    path: &KeyPath,
    raw: Option<model::Entries<Option<RawDeclaration>>>,
) -> Result<Vec<Declared>, Failure> {
    let mut out = Vec::new();
    for (key, decl) in raw.map(|e| e.0).unwrap_or_default() {
        let at = path.key(&key);
        convert::check_name(&key).map_err(|e| Failure::at(&at, format!("invalid name: {e}")))?;
        let decl = decl.unwrap_or_default();
        let (external, legacy_name) = match decl.external {
            Some(External::Flag(b)) => (b, None),
            Some(External::Named(n)) => (true, n),
            None => (false, None),
        };
        let name = match (legacy_name.or(decl.name), external) {
            (Some(n), _) => n,
            (None, true) => key.clone(),
            (None, false) => format!("{stack}_{key}"),
        };
        out.push(Declared {
            key,
            name,
            external,
        });
    }
    Ok(out)
}

/// The key path `serde_path_to_error` tracked, in our form.
fn tracked_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment as S;
    KeyPath(
        path.iter()
            .filter_map(|s| match s {
                S::Seq { index } => Some(Segment::Index(*index)),
                S::Map { key } => Some(Segment::Key(key.clone())),
                S::Enum { .. } | S::Unknown => None,
            })
            .collect(),
    )
}

/// The key path `serde_ignored` reports, in our form.
fn ignored_path(p: &serde_ignored::Path<'_>) -> KeyPath {
    use serde_ignored::Path as P;
    match p {
        P::Root => KeyPath::root(),
        P::Seq { parent, index } => ignored_path(parent).index(*index),
        P::Map { parent, key } => ignored_path(parent).key(key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// A yaml_serde parse error with its position moved in front, as `file:line:col: message`.
fn syntax_error(file: &str, e: &yaml_serde::Error) -> ComposeError {
    let location = e.location();
    let mut message = e.to_string();
    if let Some(l) = &location {
        let own = format!(" at line {} column {}", l.line(), l.column());
        if let Some(pos) = message.find(&own) {
            message.replace_range(pos..pos + own.len(), "");
        }
    }
    ComposeError::Syntax {
        at: Location {
            file: file.to_string(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        },
        message,
    }
}

/// Ties a failure to a file and position: the full path if some file has it (the last such
/// file, whose value won the merge), else the longest prefix that exists.
fn located(files: &[(String, String)], f: Failure) -> ComposeError {
    let candidates = candidate_files(files, f.file);
    let at = position(files, &candidates, &f.path.0);
    ComposeError::Invalid {
        at,
        path: f.path.to_string(),
        message: f.message,
    }
}

/// The files to search for a path: the one it came from, or all, the last first (its value won
/// the merge).
fn candidate_files(files: &[(String, String)], file: Option<usize>) -> Vec<usize> {
    match file {
        Some(i) => vec![i],
        None => (0..files.len()).rev().collect(),
    }
}

/// Where `segments` (or its longest prefix found) is in the first candidate that has it.
fn position(files: &[(String, String)], candidates: &[usize], segments: &[Segment]) -> Location {
    for len in (0..=segments.len()).rev() {
        for &i in candidates {
            if let Some((line, column)) = locate::locate(&files[i].1, &segments[..len]) {
                return Location {
                    file: files[i].0.clone(),
                    line: Some(line),
                    column: Some(column),
                };
            }
        }
    }
    unlocated(files, candidates)
}

/// The first candidate file, without a line.
fn unlocated(files: &[(String, String)], candidates: &[usize]) -> Location {
    let file = candidates
        .first()
        .and_then(|i| files.get(*i))
        .map_or_else(String::new, |(name, _)| name.clone());
    Location {
        file,
        line: None,
        column: None,
    }
}
