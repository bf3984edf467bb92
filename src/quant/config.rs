//! AIMET quantsim config files: which tensors get quantizers, and how.
//!
//! Schema (as AIMET's files): `defaults` (`ops`, `params`, `strict_symmetric`,
//! `unsigned_symmetric`, `per_channel_quantization`, `hw_version`, `supported_kernels`), `params`
//! (per parameter role:
//! `weight`, `bias` …), `op_type` (per ONNX op type: `is_input_quantized`,
//! `is_output_quantized`, `is_symmetric`, `per_channel_quantization`, `params`,
//! `supported_kernels`, `encoding_constraints`), `supergroups` (`op_list` sequences),
//! `supergroup_pass_list`, `model_input`, `model_output`. Booleans are the strings "True" /
//! "False" (JSON booleans are accepted too). Unknown keys and wrong types are errors naming the
//! key. `strict_symmetric` and `unsigned_symmetric` shape every symmetric grid (weights and
//! activations); `supported_kernels` is checked against the run's bitwidths (a warning).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Quantizer settings for a parameter role or an op's output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub is_quantized: Option<bool>,
    pub is_symmetric: Option<bool>,
}

/// Per-op-type overrides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpSettings {
    pub is_input_quantized: Option<bool>,
    pub is_output_quantized: Option<bool>,
    pub is_symmetric: Option<bool>,
    pub per_channel_quantization: Option<bool>,
    pub params: BTreeMap<String, Settings>,
    /// (min, max) the op's output range is pinned to (e.g. Sigmoid: 0..1).
    pub encoding_constraints: Option<(Option<f32>, Option<f32>)>,
    /// Kernels the target runs for this op type (overrides the defaults' list).
    pub supported_kernels: Option<Vec<SupportedKernel>>,
}

/// One (activation, parameter) grid combination a target runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SupportedKernel {
    /// (bitwidth, float?) of activations.
    pub activation: (u32, bool),
    /// (bitwidth, float?) of parameters, when the entry names them.
    pub param: Option<(u32, bool)>,
}

impl SupportedKernel {
    /// Whether integer grids of these bitwidths run on this kernel.
    pub fn runs(&self, act_bw: u32, param_bw: u32) -> bool {
        self.activation == (act_bw, false) && self.param.is_none_or(|p| p == (param_bw, false))
    }
}

/// Whose rules a simulation follows: the deployment targets' (where their quantizers go and
/// the grids their quantizers compute) or aimet-onnx 2.42's, exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlacementStyle {
    /// As the deployment targets quantize (onnxruntime's QDQ quantizer, QNN, TFLite): a
    /// supergroup's `Conv` matches every convolution, depthwise included, so no quantizer sits
    /// between a depthwise Conv and the Clip/Relu the target fuses into it; a view's output
    /// (Flatten, Reshape, ...) of a quantized value is quantized again with the same grid, so
    /// the op after it runs on integers; symmetric weights use the grid without its most
    /// negative code ([-127, 127] at 8 bits, as onnxruntime and TFLite store weights, and
    /// valid on every target); activations are calibrated on the FP32 model, as the targets'
    /// calibrators do.
    #[default]
    Targets,
    /// aimet-onnx 2.42 exactly: a depthwise convolution is its own op type
    /// (`DepthwiseConv2d`), which `Conv` supergroups do not match, so its pre-activation
    /// output is quantized; views reuse their input's quantizer; symmetric grids as the
    /// config's `strict_symmetric` says (AIMET's default keeps the most negative code);
    /// activations calibrated with the weights quantized.
    AimetOnnx,
}

impl std::str::FromStr for PlacementStyle {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "targets" => Ok(PlacementStyle::Targets),
            "aimet-onnx" => Ok(PlacementStyle::AimetOnnx),
            _ => Err(format!(
                "unknown placement '{s}' (expected targets or aimet-onnx)"
            )),
        }
    }
}

impl PlacementStyle {
    /// How reports name the placement ("placed as …").
    pub fn describe(self) -> &'static str {
        match self {
            PlacementStyle::Targets => "the targets quantize (default)",
            PlacementStyle::AimetOnnx => "aimet-onnx 2.42 places",
        }
    }
}

/// A parsed quantsim config.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantConfig {
    /// Default for op outputs.
    pub ops_output_quantized: bool,
    pub ops_symmetric: bool,
    /// Default for parameters.
    pub params_quantized: bool,
    pub params_symmetric: bool,
    pub strict_symmetric: bool,
    pub unsigned_symmetric: bool,
    pub per_channel: bool,
    pub hw_version: Option<String>,
    /// Per parameter role ("weight", "bias", …).
    pub params: BTreeMap<String, Settings>,
    pub op_type: BTreeMap<String, OpSettings>,
    /// Op-type sequences fused on the target: no quantizer between their members.
    pub supergroups: Vec<Vec<String>>,
    pub supergroup_pass_list: Vec<String>,
    pub model_input_quantized: bool,
    pub model_output_quantized: bool,
    /// Kernels the target runs (empty: not stated).
    pub supported_kernels: Vec<SupportedKernel>,
    /// How the supergroups are matched (not part of AIMET's file format).
    pub placement: PlacementStyle,
}

impl QuantConfig {
    /// Whether parameters' symmetric grids leave out the most negative code: the config's
    /// `strict_symmetric`, and always in the targets' style.
    pub fn params_strict_symmetric(&self) -> bool {
        self.strict_symmetric || self.placement == PlacementStyle::Targets
    }
}

/// AIMET's per-channel default (default_config_per_channel.json), built in.
pub const DEFAULT_PER_CHANNEL: &str = r#"{
  "defaults": {"ops": {"is_output_quantized": "True"}, "params": {"is_quantized": "True", "is_symmetric": "True"},
               "strict_symmetric": "False", "per_channel_quantization": "False"},
  "params": {"bias": {"is_quantized": "False"}},
  "op_type": {
    "Conv": {"per_channel_quantization": "True"}, "ConvTranspose": {"per_channel_quantization": "True"},
    "Gemm": {"per_channel_quantization": "True"}, "MatMul": {"per_channel_quantization": "True"},
    "PRelu": {"per_channel_quantization": "True"},
    "BatchNormalization": {"params": {"running_mean": {"is_quantized": "False"}, "running_var": {"is_quantized": "False"}}},
    "Cast": {"is_output_quantized": "False"}
  },
  "supergroup_pass_list": ["MatmulAdd"],
  "supergroups": [{"op_list": ["Conv", "Relu"]}, {"op_list": ["Conv", "Clip"]}, {"op_list": ["ConvTranspose", "Relu"]},
                  {"op_list": ["Add", "Relu"]}, {"op_list": ["Gemm", "Relu"]}],
  "model_input": {"is_input_quantized": "True"},
  "model_output": {}
}"#;

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn object<'v>(&self, key: &str, v: &'v Value) -> Result<&'v Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.err(key, format!("expected an object, found {v}")))
    }

    fn known(&self, key: &str, m: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(self.err(
                    &format!("{key}.{k}"),
                    format!("unknown key (expected one of {allowed:?})"),
                ));
            }
        }
        Ok(())
    }

    fn boolean(&self, key: &str, v: &Value) -> Result<bool> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s == "True" || s == "true" => Ok(true),
            Value::String(s) if s == "False" || s == "false" => Ok(false),
            other => Err(self.err(
                key,
                format!("expected \"True\" or \"False\", found {other}"),
            )),
        }
    }

    fn opt_bool(&self, key: &str, m: &Map<String, Value>, name: &str) -> Result<Option<bool>> {
        m.get(name)
            .map(|v| self.boolean(&format!("{key}.{name}"), v))
            .transpose()
    }

    /// A `supported_kernels` list: `[{"activation": {"bitwidth": 8, "dtype": "int"}, "param": {…}}]`.
    fn kernels(&self, key: &str, v: &Value) -> Result<Vec<SupportedKernel>> {
        let list = v
            .as_array()
            .ok_or_else(|| self.err(key, format!("expected a list, found {v}")))?;
        let grid = |k: &str, v: &Value| -> Result<(u32, bool)> {
            let m = self.object(k, v)?;
            self.known(k, m, &["bitwidth", "dtype"])?;
            let bw = m
                .get("bitwidth")
                .and_then(Value::as_u64)
                .filter(|b| (1..=32).contains(b))
                .ok_or_else(|| {
                    self.err(
                        &format!("{k}.bitwidth"),
                        format!(
                            "expected a bitwidth in 1..=32, found {:?}",
                            m.get("bitwidth")
                        ),
                    )
                })?;
            let float = match m.get("dtype").and_then(Value::as_str) {
                Some("int") => false,
                Some("float") => true,
                other => {
                    return Err(self.err(
                        &format!("{k}.dtype"),
                        format!("expected \"int\" or \"float\", found {other:?}"),
                    ))
                }
            };
            Ok((bw as u32, float))
        };
        list.iter()
            .enumerate()
            .map(|(i, e)| {
                let k = format!("{key}[{i}]");
                let m = self.object(&k, e)?;
                self.known(&k, m, &["activation", "param"])?;
                let act = m
                    .get("activation")
                    .ok_or_else(|| self.err(&format!("{k}.activation"), "missing"))?;
                Ok(SupportedKernel {
                    activation: grid(&format!("{k}.activation"), act)?,
                    param: m
                        .get("param")
                        .map(|p| grid(&format!("{k}.param"), p))
                        .transpose()?,
                })
            })
            .collect()
    }

    fn settings(&self, key: &str, v: &Value) -> Result<Settings> {
        let m = self.object(key, v)?;
        self.known(key, m, &["is_quantized", "is_symmetric"])?;
        Ok(Settings {
            is_quantized: self.opt_bool(key, m, "is_quantized")?,
            is_symmetric: self.opt_bool(key, m, "is_symmetric")?,
        })
    }
}

impl QuantConfig {
    /// The same config with every weight quantized per tensor.
    pub fn per_tensor(mut self) -> QuantConfig {
        self.per_channel = false;
        for o in self.op_type.values_mut() {
            o.per_channel_quantization = Some(false);
        }
        self
    }

    /// The same config placed in `style`.
    pub fn with_placement(mut self, style: PlacementStyle) -> QuantConfig {
        self.placement = style;
        self
    }

    /// AIMET's per-channel default.
    pub fn default_per_channel() -> QuantConfig {
        QuantConfig::parse(DEFAULT_PER_CHANNEL, "built-in default")
            .expect("the built-in config parses")
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<QuantConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            action: "reading config",
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        QuantConfig::parse(&text, &path.display().to_string())
    }

    /// Parses config JSON; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<QuantConfig> {
        let cx = Ctx { file };
        let root: Value = serde_json::from_str(text)
            .map_err(|e| cx.err("(file)", format!("not valid JSON: {e}")))?;
        let root = cx.object("(root)", &root)?;
        cx.known(
            "(root)",
            root,
            &[
                "defaults",
                "params",
                "op_type",
                "supergroups",
                "supergroup_pass_list",
                "model_input",
                "model_output",
            ],
        )?;
        let defaults = cx.object(
            "defaults",
            root.get("defaults")
                .ok_or_else(|| cx.err("defaults", "missing"))?,
        )?;
        cx.known(
            "defaults",
            defaults,
            &[
                "ops",
                "params",
                "strict_symmetric",
                "unsigned_symmetric",
                "per_channel_quantization",
                "hw_version",
                "supported_kernels",
            ],
        )?;
        let ops = match defaults.get("ops") {
            Some(v) => cx.object("defaults.ops", v)?.clone(),
            None => Map::new(),
        };
        cx.known(
            "defaults.ops",
            &ops,
            &["is_output_quantized", "is_symmetric", "is_input_quantized"],
        )?;
        let dparams = match defaults.get("params") {
            Some(v) => cx.settings("defaults.params", v)?,
            None => Settings::default(),
        };
        let flag = |name: &str, default: bool| -> Result<bool> {
            Ok(cx.opt_bool("defaults", defaults, name)?.unwrap_or(default))
        };
        let mut params = BTreeMap::new();
        if let Some(v) = root.get("params") {
            for (role, s) in cx.object("params", v)? {
                params.insert(role.clone(), cx.settings(&format!("params.{role}"), s)?);
            }
        }
        let mut op_type = BTreeMap::new();
        if let Some(v) = root.get("op_type") {
            for (op, s) in cx.object("op_type", v)? {
                let key = format!("op_type.{op}");
                let m = cx.object(&key, s)?;
                cx.known(
                    &key,
                    m,
                    &[
                        "is_input_quantized",
                        "is_output_quantized",
                        "is_symmetric",
                        "per_channel_quantization",
                        "params",
                        "supported_kernels",
                        "encoding_constraints",
                    ],
                )?;
                let mut o = OpSettings {
                    is_input_quantized: cx.opt_bool(&key, m, "is_input_quantized")?,
                    is_output_quantized: cx.opt_bool(&key, m, "is_output_quantized")?,
                    is_symmetric: cx.opt_bool(&key, m, "is_symmetric")?,
                    per_channel_quantization: cx.opt_bool(&key, m, "per_channel_quantization")?,
                    supported_kernels: m
                        .get("supported_kernels")
                        .map(|v| cx.kernels(&format!("{key}.supported_kernels"), v))
                        .transpose()?,
                    ..Default::default()
                };
                if let Some(p) = m.get("params") {
                    for (role, s) in cx.object(&format!("{key}.params"), p)? {
                        o.params.insert(
                            role.clone(),
                            cx.settings(&format!("{key}.params.{role}"), s)?,
                        );
                    }
                }
                if let Some(c) = m.get("encoding_constraints") {
                    let ck = format!("{key}.encoding_constraints");
                    let cm = cx.object(&ck, c)?;
                    cx.known(&ck, cm, &["min", "max"])?;
                    let num = |n: &str| {
                        cm.get(n)
                            .map(|v| {
                                v.as_f64().map(|f| f as f32).ok_or_else(|| {
                                    cx.err(
                                        &format!("{ck}.{n}"),
                                        format!("expected a number, found {v}"),
                                    )
                                })
                            })
                            .transpose()
                    };
                    o.encoding_constraints = Some((num("min")?, num("max")?));
                }
                op_type.insert(op.clone(), o);
            }
        }
        let mut supergroups = Vec::new();
        if let Some(v) = root.get("supergroups") {
            let list = v
                .as_array()
                .ok_or_else(|| cx.err("supergroups", "expected a list"))?;
            for (i, g) in list.iter().enumerate() {
                let key = format!("supergroups[{i}]");
                let m = cx.object(&key, g)?;
                cx.known(&key, m, &["op_list"])?;
                let ops = m.get("op_list").and_then(Value::as_array).ok_or_else(|| {
                    cx.err(&format!("{key}.op_list"), "expected a list of op types")
                })?;
                supergroups.push(
                    ops.iter()
                        .map(|o| {
                            o.as_str().map(str::to_string).ok_or_else(|| {
                                cx.err(
                                    &format!("{key}.op_list"),
                                    format!("expected op type strings, found {o}"),
                                )
                            })
                        })
                        .collect::<Result<_>>()?,
                );
            }
        }
        let supergroup_pass_list = match root.get("supergroup_pass_list") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        cx.err(
                            "supergroup_pass_list",
                            format!("expected strings, found {v}"),
                        )
                    })
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(cx.err(
                    "supergroup_pass_list",
                    format!("expected a list, found {other}"),
                ))
            }
            None => Vec::new(),
        };
        let section = |name: &str, flag: &str| -> Result<Option<bool>> {
            match root.get(name) {
                None => Ok(None),
                Some(v) => {
                    let m = cx.object(name, v)?;
                    cx.known(name, m, &[flag])?;
                    cx.opt_bool(name, m, flag)
                }
            }
        };
        Ok(QuantConfig {
            ops_output_quantized: cx
                .opt_bool("defaults.ops", &ops, "is_output_quantized")?
                .unwrap_or(false),
            ops_symmetric: cx
                .opt_bool("defaults.ops", &ops, "is_symmetric")?
                .unwrap_or(false),
            params_quantized: dparams.is_quantized.unwrap_or(true),
            params_symmetric: dparams.is_symmetric.unwrap_or(true),
            strict_symmetric: flag("strict_symmetric", false)?,
            unsigned_symmetric: flag("unsigned_symmetric", false)?,
            per_channel: flag("per_channel_quantization", false)?,
            hw_version: defaults
                .get("hw_version")
                .and_then(Value::as_str)
                .map(str::to_string),
            params,
            op_type,
            supergroups,
            supergroup_pass_list,
            model_input_quantized: section("model_input", "is_input_quantized")?.unwrap_or(false),
            model_output_quantized: section("model_output", "is_output_quantized")?
                .unwrap_or(false),
            supported_kernels: defaults
                .get("supported_kernels")
                .map(|v| cx.kernels("defaults.supported_kernels", v))
                .transpose()?
                .unwrap_or_default(),
            placement: PlacementStyle::default(),
        })
    }

    /// Where a W`param_bw`A`act_bw` integer run falls outside the target's supported kernels:
    /// "defaults" and each of `op_types` whose list (its own, else the defaults') states kernels
    /// and none runs these bitwidths.
    pub fn unsupported<'a>(
        &self,
        act_bw: u32,
        param_bw: u32,
        op_types: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let fails = |list: &[SupportedKernel]| {
            !list.is_empty() && !list.iter().any(|k| k.runs(act_bw, param_bw))
        };
        let mut out = Vec::new();
        if fails(&self.supported_kernels) {
            out.push("defaults".to_string());
        }
        for op in op_types {
            if let Some(list) = self
                .op_type
                .get(op)
                .and_then(|o| o.supported_kernels.as_deref())
            {
                if fails(list) && !out.iter().any(|o| o == op) {
                    out.push(op.to_string());
                }
            }
        }
        out
    }
}
