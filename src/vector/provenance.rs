//! Where a vector came from: one typed record, written to every file format (the `.json`
//! sidecar with the Python script's keys and meanings, the safetensors `__metadata__` and the
//! `.pkl` as strings) and read back from each.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::layers::LayerSpec;

/// A trained vector's provenance. Fields a file does not carry (vectors from other tools, a
/// llama.cpp control vector) are `None`; keys this tool does not know are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrast_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrast_name: Option<String>,
    /// `--model` as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Decoder blocks of the model.
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_layers: Option<usize>,
    /// `--layers` as given: `"all"` or the list.
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<LayerSpec>,
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_samples: Option<usize>,
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// `YYYYMMDD_HHMMSS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// ISO 8601.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_trained: Option<String>,
    /// The files' base name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The absolute block indices `layers` resolved to.
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers_resolved: Option<Vec<usize>>,
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    /// HF's `model_type` (also llama.cpp's model hint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Which contrast-pair file was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_source: Option<String>,
    /// Real tokens run through the model.
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// Seconds of training.
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    /// How the per-pair differences became the vector (`--aggregator`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<String>,
    /// Which tokens were read: a token index (`-1` is the last), `last-content` or
    /// `suffix-mean`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_token: Option<String>,
    /// Each layer's vector was scaled to unit norm (`--normalize`).
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized: Option<bool>,
    /// Each side went through the model's chat template (`--chat`).
    #[serde(default, deserialize_with = "lenient")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<bool>,
    /// Keys of other writers, as strings.
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

/// A field stored natively (the `.json` sidecar) or as the text of its JSON value (safetensors
/// and `.pkl` metadata are string maps). A value that does not parse is dropped rather than
/// making the vector unreadable.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    let parsed = match v {
        Value::String(s) => serde_json::from_str(&s)
            .or_else(|_| serde_json::from_value(Value::String(s)))
            .ok(),
        other => serde_json::from_value(other).ok(),
    };
    Ok(parsed)
}

impl Provenance {
    /// The record as a string map: strings as they are, other values as JSON text.
    pub fn to_strings(&self) -> BTreeMap<String, String> {
        let Ok(Value::Object(map)) = serde_json::to_value(self) else {
            return BTreeMap::new();
        };
        map.into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect()
    }

    /// Reads a string map written by [`Provenance::to_strings`] (or by another tool).
    pub fn from_strings(map: &BTreeMap<String, String>) -> Provenance {
        let obj: serde_json::Map<String, Value> = map
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        serde_json::from_value(Value::Object(obj)).unwrap_or_default()
    }

    /// The `.json` sidecar's object: this record's keys, then `layer_type`.
    pub fn to_json(&self, layer_type: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.insert("layer_type".into(), layer_type.into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provenance {
        Provenance {
            contrast_type: Some("tom".into()),
            model: Some("123".into()),
            num_layers: Some(26),
            layers: Some(LayerSpec::List(vec![-1, -2])),
            layers_resolved: Some(vec![24, 25]),
            seconds: Some(1.5),
            extra: BTreeMap::from([("origin".into(), "elsewhere".into())]),
            ..Provenance::default()
        }
    }

    #[test]
    fn string_maps_round_trip() {
        let p = sample();
        let strings = p.to_strings();
        assert_eq!(strings["num_layers"], "26");
        assert_eq!(strings["layers"], "[-1,-2]");
        assert_eq!(strings["model"], "123");
        assert_eq!(Provenance::from_strings(&strings), p);
        let all = Provenance {
            layers: Some(LayerSpec::All),
            ..Provenance::default()
        };
        assert_eq!(all.to_strings()["layers"], "all");
        assert_eq!(Provenance::from_strings(&all.to_strings()), all);
    }

    #[test]
    fn sidecar_keeps_python_keys_first() {
        let j = sample().to_json("decoder_block");
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(keys[..3], ["contrast_type", "model", "num_layers"]);
        assert_eq!(j["num_layers"], 26);
        assert_eq!(j["layers"], serde_json::json!([-1, -2]));
        assert_eq!(j["layer_type"], "decoder_block");
    }

    #[test]
    fn unparsable_numbers_are_dropped() {
        let m = BTreeMap::from([("num_layers".to_string(), "many".to_string())]);
        assert_eq!(Provenance::from_strings(&m).num_layers, None);
    }
}
