//! Contrast types, their JSON files, and the pairs built from them.
//!
//! Each type names a file of objects; two of its string fields (or a shared prefix plus one of
//! two fields) make the positive and negative texts. The shipped files are compiled in, so an
//! installed binary trains from any directory; `--data-dir` reads the same file names instead.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::chat::{ChatFormat, Message, Role};
use crate::error::{Error, Result};
use indicatif::HumanBytes;

/// The four kinds of contrast the tool trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContrastType {
    Tom,
    Irony,
    SelfOther,
    Harmfulness,
}

/// How an entry of a contrast file becomes a pair of texts.
struct Schema {
    /// Field put before both sides with a space, when the type has a shared prefix.
    prefix: Option<&'static str>,
    positive: &'static str,
    negative: &'static str,
}

impl ContrastType {
    pub const ALL: [ContrastType; 4] = [
        ContrastType::Tom,
        ContrastType::Irony,
        ContrastType::SelfOther,
        ContrastType::Harmfulness,
    ];

    /// The name used on the command line and in file names.
    pub fn key(self) -> &'static str {
        match self {
            ContrastType::Tom => "tom",
            ContrastType::Irony => "irony",
            ContrastType::SelfOther => "self_other",
            ContrastType::Harmfulness => "harmfulness",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            ContrastType::Tom => "Theory of Mind",
            ContrastType::Irony => "Irony",
            ContrastType::SelfOther => "Self-Other",
            ContrastType::Harmfulness => "Harmfulness",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            ContrastType::Tom => "theory_of_mind.json",
            ContrastType::Irony => "irony.json",
            ContrastType::SelfOther => "self_other.json",
            ContrastType::Harmfulness => "harmfulness.json",
        }
    }

    fn schema(self) -> Schema {
        match self {
            ContrastType::Tom => Schema {
                prefix: Some("scenario"),
                positive: "high_tom",
                negative: "low_tom",
            },
            ContrastType::Irony => Schema {
                prefix: None,
                positive: "literal",
                negative: "ironic",
            },
            ContrastType::SelfOther => Schema {
                prefix: None,
                positive: "self_subject",
                negative: "other_subject",
            },
            ContrastType::Harmfulness => Schema {
                prefix: Some("instruction"),
                positive: "harmless",
                negative: "harmful",
            },
        }
    }

    /// The fields an entry must carry, in schema order.
    pub fn required_fields(self) -> Vec<&'static str> {
        let s = self.schema();
        s.prefix
            .into_iter()
            .chain([s.positive, s.negative])
            .collect()
    }

    pub fn parse(name: &str) -> Option<ContrastType> {
        Self::ALL.into_iter().find(|t| t.key() == name)
    }

    /// The file compiled into the binary.
    fn shipped(self) -> &'static str {
        match self {
            ContrastType::Tom => include_str!("../data/contrast_pairs/theory_of_mind.json"),
            ContrastType::Irony => include_str!("../data/contrast_pairs/irony.json"),
            ContrastType::SelfOther => include_str!("../data/contrast_pairs/self_other.json"),
            ContrastType::Harmfulness => include_str!("../data/contrast_pairs/harmfulness.json"),
        }
    }
}

fn valid_types() -> String {
    let names: Vec<_> = ContrastType::ALL.iter().map(|t| t.key()).collect();
    format!("valid types: {}", names.join(", "))
}

/// One contrast type by name (`evaluate --contrast-type`).
impl std::str::FromStr for ContrastType {
    type Err = Error;
    fn from_str(name: &str) -> Result<Self> {
        ContrastType::parse(name.trim()).ok_or_else(|| {
            Error::new(format!(
                "invalid value `{}` for `--contrast-type`",
                name.trim()
            ))
            .with_hint(valid_types())
        })
    }
}

/// `--contrast-type` when training: one name, a comma-separated list, or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContrastSelection(pub Vec<ContrastType>);

impl std::str::FromStr for ContrastSelection {
    type Err = Error;
    fn from_str(spec: &str) -> Result<Self> {
        parse_contrast_types(spec).map(ContrastSelection)
    }
}

/// Parses `--contrast-type`: one name, a comma-separated list, or `all`.
pub fn parse_contrast_types(spec: &str) -> Result<Vec<ContrastType>> {
    if spec.trim() == "all" {
        return Ok(ContrastType::ALL.to_vec());
    }
    let mut types = Vec::new();
    for part in spec.split(',') {
        let t: ContrastType = part.parse().map_err(|e: Error| {
            Error::new(e.message()).with_hint(format!("{}, or `all`", valid_types()))
        })?;
        if types.contains(&t) {
            return Err(Error::new(format!(
                "`--contrast-type` names `{}` twice",
                part.trim()
            )));
        }
        types.push(t);
    }
    Ok(types)
}

/// One training example: the same context with and without the targeted property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContrastPair {
    pub positive: String,
    pub negative: String,
    /// The prompt both sides answer and each side's own answer, when the entry has a prompt
    /// field (a type's shared prefix, or `prompt` in a plain pair file): for `--chat`.
    pub turns: Option<Turns>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turns {
    pub prompt: String,
    pub positive: String,
    pub negative: String,
}

impl ContrastPair {
    pub fn new(positive: impl Into<String>, negative: impl Into<String>) -> ContrastPair {
        ContrastPair {
            positive: positive.into(),
            negative: negative.into(),
            turns: None,
        }
    }

    /// Both sides through a chat format: as the model's answers to the entry's prompt when it
    /// has one, else each side as a user turn. Either way each side ends with the format's
    /// end-of-turn marker.
    pub fn in_chat(&self, format: ChatFormat) -> ContrastPair {
        let msg = |role, content: &str| Message {
            role,
            content: content.to_string(),
        };
        let side = |own: &str| match &self.turns {
            Some(t) => format.transcript(&[msg(Role::User, &t.prompt), msg(Role::Assistant, own)]),
            None => format.transcript(&[msg(Role::User, own)]),
        };
        let (pos, neg) = match &self.turns {
            Some(t) => (side(&t.positive), side(&t.negative)),
            None => (side(&self.positive), side(&self.negative)),
        };
        ContrastPair::new(pos, neg)
    }
}

/// Where contrast files are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The copies compiled into the binary.
    Shipped,
    /// A directory holding the types' files under their usual names.
    Dir(PathBuf),
    /// One file, read with the type's schema.
    File(PathBuf),
}

impl DataSource {
    /// `--data-dir` when given, else the shipped files.
    pub fn from_dir(dir: Option<PathBuf>) -> DataSource {
        dir.map_or(DataSource::Shipped, DataSource::Dir)
    }

    pub fn describe(&self, t: ContrastType) -> String {
        match self {
            DataSource::Shipped => format!("built-in {}", t.file_name()),
            DataSource::Dir(d) => d.join(t.file_name()).display().to_string(),
            DataSource::File(f) => f.display().to_string(),
        }
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Shipped => f.write_str("built-in contrast pairs"),
            DataSource::Dir(d) | DataSource::File(d) => write!(f, "{}", d.display()),
        }
    }
}

/// Pairs of one set, with how many the file held before `--num-samples`.
#[derive(Debug, Clone)]
pub struct LoadedPairs {
    /// Names the outputs and is the metadata's `contrast_type`: the type's key, or a pair
    /// file's stem.
    pub key: String,
    /// The metadata's `contrast_name`.
    pub display_name: String,
    /// Where the pairs were read.
    pub source: String,
    pub pairs: Vec<ContrastPair>,
    pub available: usize,
}

impl LoadedPairs {
    fn new(
        key: &str,
        name: &str,
        source: String,
        pairs: Vec<ContrastPair>,
        limit: Option<usize>,
    ) -> Self {
        let available = pairs.len();
        LoadedPairs {
            key: key.to_string(),
            display_name: name.to_string(),
            source,
            pairs: pairs
                .into_iter()
                .take(limit.unwrap_or(usize::MAX))
                .collect(),
            available,
        }
    }
}

/// What to train a vector on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairSet {
    /// A contrast type's file from the data source.
    Type(ContrastType),
    /// Any pair file (`--pairs`).
    File(PathBuf),
}

impl PairSet {
    pub fn load(&self, source: &DataSource, limit: Option<usize>) -> Result<LoadedPairs> {
        match self {
            PairSet::Type(t) => load_pairs(source, *t, limit),
            PairSet::File(path) => load_pair_file(path, limit),
        }
    }

    /// How logs name it before it is read.
    pub fn name(&self) -> String {
        match self {
            PairSet::Type(t) => t.key().to_string(),
            PairSet::File(p) => p.display().to_string(),
        }
    }
}

/// A pair file of any shape: the shipped schemas, or `{"positive", "negative"}` objects
/// (extra keys ignored). Named by its file stem.
pub fn load_pair_file(path: &Path, limit: Option<usize>) -> Result<LoadedPairs> {
    let origin = format!("`{}`", path.display());
    let text = read_text(
        path,
        "check that `--pairs` points at a file of contrast pairs",
    )?;
    let pairs = parse_any_pairs(&text).map_err(|e| e.context(&origin))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::new(format!("{origin} has no file name to name the vector by")))?;
    Ok(LoadedPairs::new(
        &stem,
        &stem,
        path.display().to_string(),
        pairs,
        limit,
    ))
}

/// Pairs in whichever schema the first entry has.
pub fn parse_any_pairs(text: &str) -> Result<Vec<ContrastPair>> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Error::new(format!(
            "not valid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let first = match &value {
        Value::Array(entries) => entries.first().and_then(Value::as_object),
        _ => None,
    };
    let has = |k: &str| first.is_some_and(|o| o.contains_key(k));
    if has("positive") && has("negative") {
        return parse_with(&value, None, "positive", "negative", "pairs");
    }
    match ContrastType::ALL
        .into_iter()
        .find(|t| t.required_fields().iter().all(|f| has(f)))
    {
        Some(t) => parse_pairs(text, t),
        None => Err(Error::new("entry 0 is not a contrast pair").with_hint(
            "entries need `positive` and `negative`, or the fields of a contrast type (e.g. `scenario`, `high_tom`, `low_tom`)",
        )),
    }
}

/// Reads, validates and builds the pairs of `t`, keeping the first `limit` in file order.
pub fn load_pairs(
    source: &DataSource,
    t: ContrastType,
    limit: Option<usize>,
) -> Result<LoadedPairs> {
    let (text, origin) = match source {
        DataSource::Shipped => (
            t.shipped().to_string(),
            format!("built-in `{}`", t.file_name()),
        ),
        DataSource::Dir(dir) => {
            let path = dir.join(t.file_name());
            let text = read_text(&path, "check that `--data-dir` points at a directory of contrast pair files")
                .map_err(|e| match e.hint() {
                    Some(_) => e,
                    None => e.with_hint("`--data-dir` must hold theory_of_mind.json, irony.json, self_other.json and harmfulness.json"),
                })?;
            (text, format!("`{}`", path.display()))
        }
        DataSource::File(path) => (
            read_text(
                path,
                "check that the path points at a file of contrast pairs",
            )?,
            format!("`{}`", path.display()),
        ),
    };
    let pairs = parse_pairs(&text, t).map_err(|e| e.context(&origin))?;
    Ok(LoadedPairs::new(
        t.key(),
        t.display_name(),
        source.describe(t),
        pairs,
        limit,
    ))
}

/// Far larger than a contrast file needs to be (100,000 pairs take about 30 MiB; the shipped
/// files are under 200 KiB): a bigger file is almost certainly not one, and is refused before
/// it is read.
const MAX_DATA_FILE: u64 = 32 << 20;

/// The file's text; `too_big` is the hint for a file over the size limit.
fn read_text(path: &Path, too_big: &str) -> Result<String> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.len() > MAX_DATA_FILE {
            return Err(Error::new(format!(
                "contrast pairs file `{}` is {}, over the {} limit",
                path.display(),
                HumanBytes(meta.len()),
                HumanBytes(MAX_DATA_FILE)
            ))
            .with_hint(too_big));
        }
    }
    let bytes = std::fs::read(path).map_err(|e| {
        Error::new(format!(
            "cannot read contrast pairs file `{}`: {e}",
            path.display()
        ))
    })?;
    String::from_utf8(bytes).map_err(|e| {
        Error::new(format!(
            "contrast pairs file `{}` is not valid UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Parses the JSON text of a contrast file of type `t` into pairs.
pub fn parse_pairs(text: &str, t: ContrastType) -> Result<Vec<ContrastPair>> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Error::new(format!(
            "not valid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let schema = t.schema();
    parse_with(
        &value,
        schema.prefix,
        schema.positive,
        schema.negative,
        t.key(),
    )
}

/// Entries with a `positive` and a `negative` field (and a shared `prefix` field when given),
/// validated; `what` names the schema in hints.
fn parse_with(
    value: &Value,
    prefix: Option<&str>,
    positive: &str,
    negative: &str,
    what: &str,
) -> Result<Vec<ContrastPair>> {
    let Value::Array(entries) = value else {
        return Err(Error::new(format!(
            "expected a JSON list of objects, found {}",
            kind(value)
        )));
    };
    if entries.is_empty() {
        return Err(Error::new("the list of contrast pairs is empty"));
    }
    let required: Vec<String> = prefix
        .into_iter()
        .chain([positive, negative])
        .map(|f| format!("`{f}`"))
        .collect();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let Value::Object(obj) = entry else {
                return Err(Error::new(format!(
                    "entry {i} is {}, expected an object",
                    kind(entry)
                )));
            };
            let field = |name: &str| -> Result<&str> {
                match obj.get(name) {
                    None => Err(
                        Error::new(format!("entry {i} has no `{name}` field")).with_hint(format!(
                            "each `{what}` entry needs the fields {}",
                            required.join(", ")
                        )),
                    ),
                    Some(Value::String(s)) if s.trim().is_empty() => {
                        Err(Error::new(format!("entry {i} has an empty `{name}` field")))
                    }
                    Some(Value::String(s)) => Ok(s.as_str()),
                    Some(other) => Err(Error::new(format!(
                        "entry {i} field `{name}` is {}, expected a string",
                        kind(other)
                    ))),
                }
            };
            let prefix = prefix.map(field).transpose()?;
            let (pos, neg) = (field(positive)?, field(negative)?);
            let join = |side: &str| match prefix {
                Some(p) => format!("{p} {side}"),
                None => side.to_string(),
            };
            // A plain pair file's optional `prompt` is used by `--chat` only.
            let prompt = match prefix {
                Some(p) => Some(p),
                None if what == "pairs" && obj.contains_key("prompt") => Some(field("prompt")?),
                None => None,
            };
            Ok(ContrastPair {
                positive: join(pos),
                negative: join(neg),
                turns: prompt.map(|p| Turns {
                    prompt: p.to_string(),
                    positive: pos.to_string(),
                    negative: neg.to_string(),
                }),
            })
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tom_joins_scenario_with_a_space() {
        let text = r#"[{"scenario": "S.", "high_tom": "A.", "low_tom": "B.", "category": "x"}]"#;
        let pairs = parse_pairs(text, ContrastType::Tom).unwrap();
        assert_eq!(pairs[0].positive, "S. A.");
        assert_eq!(pairs[0].negative, "S. B.");
    }

    #[test]
    fn harmfulness_positive_is_the_harmless_side() {
        let text = r#"[{"instruction": "Do X.", "harmless": "No.", "harmful": "Yes."}]"#;
        let pairs = parse_pairs(text, ContrastType::Harmfulness).unwrap();
        assert_eq!(pairs[0].positive, "Do X. No.");
        assert_eq!(pairs[0].negative, "Do X. Yes.");
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        let text = r#"[{"literal": "a", "ironic": "b"}, {"literal": "a"}]"#;
        let err = parse_pairs(text, ContrastType::Irony).unwrap_err();
        assert_eq!(err.message(), "entry 1 has no `ironic` field");
        let text = r#"[{"self_subject": " ", "other_subject": "b"}]"#;
        let err = parse_pairs(text, ContrastType::SelfOther).unwrap_err();
        assert_eq!(err.message(), "entry 0 has an empty `self_subject` field");
        let err = parse_pairs("[3]", ContrastType::SelfOther).unwrap_err();
        assert_eq!(err.message(), "entry 0 is a number, expected an object");
    }

    #[test]
    fn contrast_type_lists() {
        assert_eq!(parse_contrast_types("all").unwrap().len(), 4);
        assert_eq!(
            parse_contrast_types("tom,irony").unwrap(),
            vec![ContrastType::Tom, ContrastType::Irony]
        );
        assert!(parse_contrast_types("tom,tom").is_err());
        let err = parse_contrast_types("humor").unwrap_err();
        assert!(err.message().contains("`--contrast-type`"));
        assert!(err.hint().unwrap().contains("self_other"));
    }

    #[test]
    fn shipped_files_parse() {
        for t in ContrastType::ALL {
            let loaded = load_pairs(&DataSource::Shipped, t, None).unwrap();
            assert!(loaded.pairs.len() >= 20, "{} has too few pairs", t.key());
        }
    }
}
