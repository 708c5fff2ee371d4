//! GGUF checkpoints (llama.cpp's format): the architecture and dimensions come from the file's
//! metadata, put in HF's config keys and completed by the architecture's [`GgufFacts`], and
//! tensors are dequantized on demand under HF's names, undoing llama.cpp's conversions (norms
//! stored as `1 + w`, q/k rows permuted for its RoPE layout).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::{Content, Value as GgufValue};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use serde_json::{json, Map, Value};

use super::config::TextConfig;
use super::{GgufFacts, ARCHITECTURES};
use crate::error::{Error, Result};
use crate::gguf_header::GgufHeader;

#[derive(Clone)]
pub struct GgufCheckpoint {
    path: PathBuf,
    content: Arc<Content>,
    file: Arc<Mutex<File>>,
    facts: &'static GgufFacts,
    heads: usize,
    kv_heads: usize,
}

fn meta_u64(md: &HashMap<String, GgufValue>, key: &str) -> Option<u64> {
    let v = md.get(key)?;
    v.to_u64()
        .ok()
        .or_else(|| v.to_u32().ok().map(u64::from))
        .or_else(|| v.to_i32().ok().and_then(|x| u64::try_from(x).ok()))
}

fn meta_f64(md: &HashMap<String, GgufValue>, key: &str) -> Option<f64> {
    md.get(key)?.to_f32().ok().map(f64::from)
}

fn meta_str<'a>(md: &'a HashMap<String, GgufValue>, key: &str) -> Option<&'a str> {
    md.get(key)?.to_string().ok().map(String::as_str)
}

impl GgufCheckpoint {
    /// Opens `path` and derives the text config from its metadata, in HF's words.
    pub fn open(path: &Path) -> Result<(GgufCheckpoint, TextConfig)> {
        let bad = |what: String| Error::new(format!("`{}` {what}", path.display()));
        GgufHeader::read_file(path).map_err(|e| bad(e.message().to_string()))?;
        let mut file = File::open(path).map_err(|e| bad(format!("cannot be opened: {e}")))?;
        let content =
            Content::read(&mut file).map_err(|e| bad(format!("is not a valid GGUF file: {e}")))?;
        let md = &content.metadata;
        let a = meta_str(md, "general.architecture").unwrap_or_default();
        let (arch, facts) = ARCHITECTURES
            .iter()
            .find_map(|arch| {
                arch.gguf
                    .as_ref()
                    .filter(|g| g.arch == a)
                    .map(|g| (*arch, g))
            })
            .ok_or_else(|| {
                let known: Vec<&str> = ARCHITECTURES
                    .iter()
                    .filter_map(|arch| arch.gguf.as_ref().map(|g| g.arch))
                    .collect();
                bad(format!("has unsupported GGUF architecture `{a}`")).with_hint(format!(
                    "supported GGUF architectures: {}",
                    known.join(", ")
                ))
            })?;
        let need = |key: &str| {
            meta_u64(md, &format!("{a}.{key}"))
                .ok_or_else(|| bad(format!("has no `{a}.{key}` metadata")))
        };
        let hidden = need("embedding_length")? as usize;
        let heads = need("attention.head_count")? as usize;
        let kv_heads =
            meta_u64(md, &format!("{a}.attention.head_count_kv")).unwrap_or(heads as u64) as usize;
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .and_then(|t| t.shape.dims().first().copied())
            .ok_or_else(|| bad("has no `token_embd.weight`".to_string()))?;
        let mut cfg = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                cfg.insert(k.to_string(), v);
            }
        };
        put("model_type", Some(json!(arch.model_types[0])));
        put("vocab_size", Some(json!(vocab)));
        put("hidden_size", Some(json!(hidden)));
        put(
            "intermediate_size",
            Some(json!(need("feed_forward_length")?)),
        );
        put("num_hidden_layers", Some(json!(need("block_count")?)));
        put("num_attention_heads", Some(json!(heads)));
        put("num_key_value_heads", Some(json!(kv_heads)));
        let head_dim = meta_u64(md, &format!("{a}.attention.key_length"))
            .unwrap_or((hidden / heads.max(1)) as u64);
        put("head_dim", Some(json!(head_dim)));
        let f = |key: &str| meta_f64(md, &format!("{a}.{key}")).map(|x| json!(x));
        let u = |key: &str| meta_u64(md, &format!("{a}.{key}")).map(|x| json!(x));
        put("rms_norm_eps", f("attention.layer_norm_rms_epsilon"));
        put("rope_theta", f("rope.freq_base"));
        put("max_position_embeddings", u("context_length"));
        put("sliding_window", u("attention.sliding_window"));
        put("attn_logit_softcapping", f("attn_logit_softcapping"));
        put("final_logit_softcapping", f("final_logit_softcapping"));
        let scaling = meta_str(md, &format!("{a}.rope.scaling.type"));
        if let (Some(t), Some(factor)) = (scaling, f("rope.scaling.factor")) {
            if t != "none" {
                put(
                    "rope_scaling",
                    Some(json!({"rope_type": t, "factor": factor})),
                );
            }
        }
        // llama.cpp leaves `output.weight` out when the head is tied to the embedding.
        let tied = !content.tensor_infos.contains_key("output.weight");
        put("tie_word_embeddings", Some(json!(tied)));
        put(
            "eos_token_id",
            meta_u64(md, "tokenizer.ggml.eos_token_id").map(|x| json!(x)),
        );
        (facts.complete_config)(&mut cfg);
        let config = TextConfig::resolve(arch, &cfg)
            .map_err(|e| e.context(format!("`{}`", path.display())))?;
        Ok((
            GgufCheckpoint {
                path: path.to_path_buf(),
                content: Arc::new(content),
                file: Arc::new(Mutex::new(file)),
                facts,
                heads,
                kv_heads,
            },
            config,
        ))
    }

    /// Rows `ids` of the HF-named 2-D tensor `hf` (the embedding), dequantized to f32 as
    /// `[ids.len(), cols]`: only those rows' quantized blocks are read from the file.
    pub fn read_rows(&self, hf: &str, ids: &[u32], dev: &Device) -> Result<Tensor> {
        use std::os::unix::fs::FileExt;
        let name = self.gguf_name(hf).ok_or_else(|| {
            Error::new(format!(
                "`{}` has no tensor for `{hf}`",
                self.path.display()
            ))
        })?;
        let info = self.content.tensor_infos.get(&name).ok_or_else(|| {
            Error::new(format!("`{}` has no tensor `{name}`", self.path.display()))
        })?;
        let [rows, cols] = info.shape.dims()[..] else {
            return Err(Error::new(format!("tensor `{name}` is not 2-D")));
        };
        let dtype = info.ggml_dtype;
        if cols % dtype.block_size() != 0 {
            return Err(Error::new(format!(
                "tensor `{name}` rows do not hold whole quantization blocks"
            )));
        }
        let row_bytes = cols / dtype.block_size() * dtype.type_size();
        let mut raw = vec![0u8; ids.len() * row_bytes];
        let file = self
            .file
            .lock()
            .map_err(|_| Error::new("GGUF reader poisoned"))?;
        let start = self.content.tensor_data_offset + info.offset;
        for (chunk, &id) in raw.chunks_exact_mut(row_bytes).zip(ids) {
            if id as usize >= rows {
                return Err(Error::new(format!(
                    "token id {id} is outside `{name}` ({rows} rows)"
                )));
            }
            file.read_exact_at(chunk, start + id as u64 * row_bytes as u64)
                .map_err(|e| Error::new(format!("cannot read `{name}` rows: {e}")))?;
        }
        drop(file);
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
            dtype,
            &raw,
            vec![ids.len(), cols],
            &Device::Cpu,
        )?;
        Ok(q.dequantize(&Device::Cpu)?.to_device(dev)?)
    }

    /// The shape of the HF-named tensor `hf`, when the file has it.
    pub fn shape(&self, hf: &str) -> Option<Vec<usize>> {
        let name = self.gguf_name(hf)?;
        Some(self.content.tensor_infos.get(&name)?.shape.dims().to_vec())
    }

    /// Elements of block `k`'s tensors (what they take once dequantized).
    pub fn block_elements(&self, k: usize) -> u64 {
        let prefix = format!("blk.{k}.");
        self.content
            .tensor_infos
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .map(|(_, t)| t.shape.elem_count() as u64)
            .sum()
    }

    /// A tokenizer built from the file's own vocabulary, where that tokenizes like HF: GPT-2
    /// style byte-level BPE (SmolLM2, Qwen2, Llama-3). SentencePiece vocabularies (Gemma,
    /// Llama-2) are not rebuilt: their GGUF form loses what HF's tokenizer.json keeps.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::processors::template::TemplateProcessing;
        use tokenizers::AddedToken;

        let md = &self.content.metadata;
        let need = |what: String| {
            Error::new(format!(
                "no tokenizer for `{}`: {what}",
                self.path.display()
            ))
            .with_hint("put the model's tokenizer.json beside the file, or pass `--tokenizer FILE`")
        };
        let kind = md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if kind != "gpt2" {
            return Err(need(format!(
                "its `{kind}` vocabulary does not rebuild into HF's tokenizer"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let v = md
                .get(key)
                .and_then(|v| v.to_vec().ok())
                .ok_or_else(|| need(format!("`{key}` is missing")))?;
            v.iter()
                .map(|x| {
                    x.to_string()
                        .cloned()
                        .map_err(|_| need(format!("`{key}` holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let types: Vec<i64> = md
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| {
                v.iter()
                    .map(|x| x.to_i32().map(i64::from).unwrap_or(1))
                    .collect()
            })
            .unwrap_or_default();
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| need(format!("its BPE vocabulary is invalid: {e}")))?;
        let mut tok = tokenizers::Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tok.with_decoder(Some(ByteLevelDecoder::default()));
        // Control tokens (`<|im_start|>` ...) are matched whole, as in HF.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == 3)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        tok.add_special_tokens(specials)
            .map_err(|e| need(e.to_string()))?;
        let add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        if add_bos {
            let bos = meta_u64(md, "tokenizer.ggml.bos_token_id").unwrap_or(0) as u32;
            let name = tokens.get(bos as usize).cloned().unwrap_or_default();
            let post = TemplateProcessing::builder()
                .try_single(format!("{name} $A"))
                .and_then(|b| b.try_pair(format!("{name} $A {name} $B")))
                .map_err(|e| need(e.to_string()))?
                .special_tokens(vec![(name.clone(), bos)])
                .build()
                .map_err(|e| need(e.to_string()))?;
            tok.with_post_processor(Some(post));
        }
        Ok(tok)
    }

    /// HF tensor name -> GGUF tensor name.
    fn gguf_name(&self, hf: &str) -> Option<String> {
        match hf {
            "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
            "model.norm.weight" => return Some("output_norm.weight".into()),
            "lm_head.weight" => return Some("output.weight".into()),
            _ => {}
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let (module, kind) = rest.rsplit_once('.')?;
        let mapped = match module {
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "self_attn.q_norm" => "attn_q_norm",
            "self_attn.k_norm" => "attn_k_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => self.facts.post_attention_norm,
            "pre_feedforward_layernorm" => "ffn_norm",
            "post_feedforward_layernorm" => "post_ffw_norm",
            _ => return None,
        };
        Some(format!("blk.{layer}.{mapped}.{kind}"))
    }

    fn read(
        &self,
        hf: &str,
        expected: Option<&Shape>,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let name = self
            .gguf_name(hf)
            .filter(|n| self.content.tensor_infos.contains_key(n))
            .ok_or_else(|| {
                Error::new(format!(
                    "`{}` has no tensor for `{hf}`",
                    self.path.display()
                ))
            })?;
        let q = {
            let mut f = self
                .file
                .lock()
                .map_err(|_| Error::new("GGUF reader poisoned"))?;
            self.content
                .tensor(&mut *f, &name, &Device::Cpu)
                .map_err(|e| {
                    Error::new(format!(
                        "cannot read `{name}` from `{}`: {e}",
                        self.path.display()
                    ))
                })?
        };
        let mut t = q.dequantize(&Device::Cpu)?;
        if let Some(s) = expected {
            if t.dims() != s.dims() {
                return Err(Error::new(format!(
                    "tensor `{name}` in `{}` has shape {:?}, expected {:?}",
                    self.path.display(),
                    t.dims(),
                    s.dims()
                )));
            }
        }
        if self.facts.norms_plus_one && name.ends_with("norm.weight") {
            t = (t - 1.0)?;
        }
        if self.facts.permuted_qk {
            if name.ends_with("attn_q.weight") || name.ends_with("attn_q.bias") {
                t = unpermute(&t, self.heads)?;
            } else if name.ends_with("attn_k.weight") || name.ends_with("attn_k.bias") {
                t = unpermute(&t, self.kv_heads)?;
            }
        }
        Ok(t.to_dtype(dtype)?.to_device(dev)?)
    }
}

/// Undoes llama.cpp's q/k row permutation: rows `(head, half, i)` were stored as
/// `(head, i, half)`.
fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    let half = rows / heads / 2;
    Ok(t.reshape((heads, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

impl SimpleBackend for GgufCheckpoint {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.read(name, Some(&s), dtype, dev).map_err(Into::into)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, None, dtype, dev).map_err(Into::into)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.gguf_name(name)
            .is_some_and(|n| self.content.tensor_infos.contains_key(&n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(h, 2, r/h/2, c).swapaxes(1, 2).reshape(w.shape)
        let (h, r, c) = (2usize, 8usize, 3usize);
        let w = Tensor::arange(0f32, (r * c) as f32, &Device::Cpu)
            .unwrap()
            .reshape((r, c))
            .unwrap();
        let permuted = w
            .reshape((h, 2, r / h / 2, c))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((r, c))
            .unwrap();
        let back = unpermute(&permuted, h).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }
}
