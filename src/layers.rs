//! `--layers`: what the user wrote, and the decoder blocks it means.
//!
//! Layer `k` (0-based) is the residual stream leaving decoder block `k`, before the final norm:
//! steering-vectors' `decoder_block` layer `k` and HF `hidden_states[k + 1]`. Negative numbers
//! count from the end, as in Python: `-1` is the last block.

use crate::error::{Error, Result};

/// The layers as the user gave them; resolution needs the model's depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSpec {
    All,
    List(Vec<i64>),
}

impl LayerSpec {
    /// Parses `all` (any case) or comma-separated integers, as the Python script does.
    pub fn parse(s: &str) -> Result<LayerSpec> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(LayerSpec::All);
        }
        let bad = |what: &str| {
            Error::new(format!("invalid `--layers` value `{s}`: {what}"))
                .with_hint("use `all` or comma-separated integers, e.g. `--layers 10,20,30` or `--layers=-1,-2`")
        };
        if s.trim().is_empty() {
            return Err(bad("it is empty"));
        }
        let mut out = Vec::new();
        for part in s.split(',') {
            let p = part.trim();
            if p.is_empty() {
                return Err(bad("empty entry between commas"));
            }
            let digits = p.strip_prefix(['-', '+']).unwrap_or(p);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("`{p}` is not an integer")));
            }
            let n: i64 = p
                .parse()
                .map_err(|_| bad(&format!("`{p}` is out of range")))?;
            out.push(n);
        }
        Ok(LayerSpec::List(out))
    }

    /// The sorted absolute block indices for a model with `num_layers` blocks.
    pub fn resolve(&self, num_layers: usize) -> Result<Vec<usize>> {
        let l = num_layers as i64;
        match self {
            LayerSpec::All => Ok((0..num_layers).collect()),
            LayerSpec::List(list) => {
                let mut out: Vec<usize> = Vec::with_capacity(list.len());
                for &i in list {
                    if i < -l || i >= l {
                        return Err(Error::new(format!(
                            "`--layers` entry `{i}` is out of range for a model with {num_layers} layers"
                        ))
                        .with_hint(format!("valid layers are {} to {}", -l, l - 1)));
                    }
                    let k = if i < 0 { l + i } else { i } as usize;
                    if out.contains(&k) {
                        return Err(Error::new(format!(
                            "`--layers` names layer {k} twice (entry `{i}`)"
                        )));
                    }
                    out.push(k);
                }
                out.sort_unstable();
                Ok(out)
            }
        }
    }

    /// The file-name part: `all-layers`, or `layers-` and the numbers as given joined by `-`.
    pub fn file_part(&self) -> String {
        match self {
            LayerSpec::All => "all-layers".to_string(),
            LayerSpec::List(list) => {
                let nums: Vec<String> = list.iter().map(|n| n.to_string()).collect();
                format!("layers-{}", nums.join("-"))
            }
        }
    }
}

/// `all`, or the numbers as given, comma-separated.
impl std::fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerSpec::All => f.write_str("all"),
            LayerSpec::List(list) => {
                let nums: Vec<String> = list.iter().map(|n| n.to_string()).collect();
                f.write_str(&nums.join(","))
            }
        }
    }
}

/// Written as `"all"` or the list as given, the Python script's `layers` value.
impl serde::Serialize for LayerSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            LayerSpec::All => s.serialize_str("all"),
            LayerSpec::List(list) => serde::Serialize::serialize(list, s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for LayerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<i64>),
        }
        match Raw::deserialize(d)? {
            Raw::List(l) => Ok(LayerSpec::List(l)),
            Raw::Text(t) => LayerSpec::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for LayerSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        LayerSpec::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_forms() {
        assert_eq!(LayerSpec::parse("ALL").unwrap(), LayerSpec::All);
        assert_eq!(
            LayerSpec::parse("-1, -2,3").unwrap(),
            LayerSpec::List(vec![-1, -2, 3])
        );
        for bad in ["", "1,,2", "a", "1.5", "1,", "--1", "99999999999999999999"] {
            let err = LayerSpec::parse(bad).unwrap_err();
            assert!(
                err.message().contains("`--layers`"),
                "{bad}: {}",
                err.message()
            );
        }
    }

    #[test]
    fn resolves_negative_indices_from_the_end() {
        let spec = LayerSpec::parse("-1,-2,0").unwrap();
        assert_eq!(spec.resolve(4).unwrap(), vec![0, 2, 3]);
        assert_eq!(LayerSpec::All.resolve(3).unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn rejects_out_of_range_and_duplicates() {
        assert!(LayerSpec::parse("4").unwrap().resolve(4).is_err());
        assert!(LayerSpec::parse("-5").unwrap().resolve(4).is_err());
        assert!(LayerSpec::parse("-4").unwrap().resolve(4).is_ok());
        let err = LayerSpec::parse("3,-1").unwrap().resolve(4).unwrap_err();
        assert!(err.message().contains("twice"));
    }

    #[test]
    fn file_part_keeps_numbers_as_given() {
        let spec = LayerSpec::parse("-1,-2,-3").unwrap();
        assert_eq!(spec.file_part(), "layers--1--2--3");
        assert_eq!(LayerSpec::parse("+07").unwrap().file_part(), "layers-7");
        assert_eq!(LayerSpec::All.file_part(), "all-layers");
    }
}
