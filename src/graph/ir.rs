//! The host-side graph every pass and the executor work on: nodes with typed ops, values by
//! name (as ONNX and AIMET's encodings name them), constants as arrays, static shapes.

use std::collections::{BTreeMap, HashMap};

use ndarray::ArrayD;

use crate::graph::attrs::{Binary, Conv2d, Pool2d, Reduce, Resize, Unary};

/// A tensor known at load time: a weight, an initializer, a folded constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Const {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

impl Const {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Const::F32(a) => a.shape(),
            Const::I64(a) => a.shape(),
        }
    }

    /// Values as i64 (f32 truncated), for shape arithmetic.
    pub fn to_i64(&self) -> Vec<i64> {
        match self {
            Const::F32(a) => a.iter().map(|&v| v as i64).collect(),
            Const::I64(a) => a.iter().copied().collect(),
        }
    }

    /// Values as f32.
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Const::F32(a) => a.clone(),
            Const::I64(a) => a.mapv(|v| v as f32),
        }
    }
}

/// The element type ONNX declares for a runtime value.
///
/// Every runtime value lives on the GPU as f32. Integer and bool values are carried there as
/// exact f32 integers (`|v| <= 2^24`; bool as 0 and 1): inputs are checked and converted as
/// they enter, outputs are written back in their type, and the few ops whose result depends on
/// the type (integer Div and Mod truncate, Cast) lower by it. Constants keep their own arrays
/// ([`Const`]) and are exact at any size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ElemType {
    #[default]
    F32,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl ElemType {
    /// The type of an ONNX `TensorProto.DataType` code, if qforge carries it.
    pub fn from_onnx(code: i32) -> Option<ElemType> {
        Some(match code {
            1 => ElemType::F32,
            7 => ElemType::I64,
            6 => ElemType::I32,
            3 => ElemType::I8,
            2 => ElemType::U8,
            9 => ElemType::Bool,
            _ => return None,
        })
    }

    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx(self) -> i32 {
        match self {
            ElemType::F32 => 1,
            ElemType::I64 => 7,
            ElemType::I32 => 6,
            ElemType::I8 => 3,
            ElemType::U8 => 2,
            ElemType::Bool => 9,
        }
    }

    /// NumPy's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "float32",
            ElemType::I64 => "int64",
            ElemType::I32 => "int32",
            ElemType::I8 => "int8",
            ElemType::U8 => "uint8",
            ElemType::Bool => "bool",
        }
    }

    /// Integer types (bool excluded): their Div and Mod truncate.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            ElemType::I64 | ElemType::I32 | ElemType::I8 | ElemType::U8
        )
    }

    /// The name of an ONNX data type code, for messages (`"float64"`, `"type 40"`).
    pub fn onnx_name(code: i32) -> String {
        match code {
            10 => "float16".into(),
            11 => "float64".into(),
            16 => "bfloat16".into(),
            8 => "string".into(),
            4 => "uint16".into(),
            5 => "int16".into(),
            12 => "uint32".into(),
            13 => "uint64".into(),
            14 => "complex64".into(),
            15 => "complex128".into(),
            c => match ElemType::from_onnx(c) {
                Some(t) => t.name().into(),
                None => format!("type {c}"),
            },
        }
    }
}

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dimension of a graph input as declared: fixed, or named (batch, height …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Named(String),
}

/// What a node computes, with its attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv(Conv2d),
    /// `output_shape` (spatial, as given; empty: none) is turned into pads and output padding
    /// at resolution, once the input's size is known.
    ConvTranspose {
        conv: Conv2d,
        output_padding: [usize; 2],
        output_shape: Vec<usize>,
    },
    /// Y = alpha * op(A) * op(B) + beta * C.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    BatchNorm {
        epsilon: f32,
    },
    Unary(Unary),
    Binary(Binary),
    MaxPool(Pool2d),
    AveragePool(Pool2d),
    GlobalAveragePool,
    /// Local response normalization across channels (AlexNet, Inception-v1):
    /// `x / (bias + alpha / size * sum of x^2 over size channels) ^ beta`.
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    Flatten {
        axis: i64,
    },
    /// Shape from the second input (a constant after folding).
    Reshape {
        allow_zero: bool,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Concat {
        axis: i64,
    },
    /// Split sizes from the attribute or the second input.
    Split {
        axis: i64,
        split: Vec<usize>,
    },
    /// starts, ends, axes, steps from inputs (constants after folding) or attributes (opset < 10).
    Slice,
    Pad {
        mode: String,
        value: f32,
    },
    /// Scales (input 2) or sizes (input 3) of every dim; `axes` (opset 18) lists the dims
    /// they give and `keep_aspect` (not_larger, not_smaller) one scale for those dims from
    /// the sizes; both are made full-rank at resolution.
    Resize {
        mode: String,
        coordinate_transformation: String,
        nearest_mode: String,
        axes: Vec<i64>,
        keep_aspect: String,
        cubic_coeff_a: f32,
        exclude_outside: bool,
        antialias: bool,
        extrapolation_value: f32,
    },
    Softmax {
        axis: i64,
        legacy: bool,
    },
    ReduceMean {
        axes: Vec<i64>,
        keepdims: bool,
    },
    /// Einsum: rewritten at resolution into the nodes that compute it (`graph::einsum`).
    Einsum {
        equation: String,
    },
    /// ReduceSum, ReduceMax … over `axes` (all when empty, unless `noop_empty`: then the
    /// input itself).
    Reduce {
        op: Reduce,
        axes: Vec<i64>,
        keepdims: bool,
        noop_empty: bool,
    },
    /// ArgMax (or ArgMin with `min`) along `axis`; the first of equal values, or the last.
    Arg {
        min: bool,
        axis: i64,
        keepdims: bool,
        last: bool,
    },
    /// log(Softmax); `legacy` (opset < 13): over the input coerced to 2-D at `axis`.
    LogSoftmax {
        axis: i64,
        legacy: bool,
    },
    /// 1 at the first maximum along `axis`, 0 elsewhere; `legacy` as LogSoftmax.
    Hardmax {
        axis: i64,
        legacy: bool,
    },
    /// The k (input 1, a constant) largest or smallest values along `axis` and their indices.
    TopK {
        axis: i64,
        largest: bool,
    },
    /// Cumulative sums along the axis in input 1 (a constant).
    CumSum {
        exclusive: bool,
        reverse: bool,
    },
    /// Max over every spatial dim.
    GlobalMaxPool,
    /// Channels moved into blocks of `blocksize` x `blocksize` pixels (`crd`: channels read
    /// column-row-depth, else depth-column-row).
    DepthToSpace {
        blocksize: usize,
        crd: bool,
    },
    /// Blocks of pixels moved into channels (DepthToSpace's inverse in DCR order).
    SpaceToDepth {
        blocksize: usize,
    },
    /// The upper (or lower) triangle of the last two dims from the diagonal offset by input
    /// 1 (a constant, 0 when absent); zeros elsewhere.
    Trilu {
        upper: bool,
    },
    /// Input 0 with the slices input 1's index tuples name replaced by (or combined with, by
    /// `reduction`: add, mul, max, min) input 2's.
    ScatterNd {
        reduction: String,
    },
    /// (x - mean) / sqrt(var + epsilon) over dims `axis..`, times input 1, plus input 2;
    /// outputs 1 and 2 (optional) the mean and 1 / sqrt(var + epsilon).
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    /// Normalized over each (sample, channel)'s spatial dims, then scale and bias per channel.
    InstanceNorm {
        epsilon: f32,
    },
    /// Normalized over each group of channels' values, then scale and bias per channel (or,
    /// opset 18, per group).
    GroupNorm {
        groups: usize,
        epsilon: f32,
    },
    /// (x - mean) / (std + 1e-9) over `axes`.
    MeanVarianceNorm {
        axes: Vec<i64>,
    },
    Squeeze {
        axes: Vec<i64>,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    Identity,
    Dropout,
    /// qforge's own quantize-dequantize (quantization-aware training graphs; never imported
    /// or exported): input 0 on the grid of input 1, an encoding table `[channels, 4]` of
    /// (scale, 1 / scale, offset, 0), channels along `axis`, codes `0..=steps`.
    FakeQuant {
        axis: Option<usize>,
        steps: u32,
    },
    /// Shape-computing ops, folded away at load when their inputs are constant. Shape gives
    /// dims `start..end` of its input's shape.
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// The number of elements of input 0.
    Size,
    /// start, limit and delta from inputs (constants: Range folds at load).
    Range,
    /// Input 0 broadcast to the shape in input 1 (a constant).
    Expand,
    /// Input 0 repeated along each dim as many times as input 1 (a constant) says.
    Tile,
    /// Input 1 where input 0 (a bool) is true, else input 2; the three broadcast.
    Where,
    /// Cast to input 1's element type (a Cast once types resolve).
    CastLike,
    Gather {
        axis: i64,
    },
    /// Input 0 read at input 1's indices along `axis`, elementwise (the output has the
    /// indices' shape).
    GatherElements {
        axis: i64,
    },
    Cast {
        to: i32,
    },
    /// A tensor of the shape in input 0 filled with `value` (a scalar of its type).
    ConstantOfShape {
        value: Const,
        elem: ElemType,
    },
}

impl Op {
    /// The settings of a Resize qforge runs (`None`: not a Resize, or modes it does not run);
    /// the region of interest is the whole input (`graph::shape::resize_spatial_roi` reads the
    /// node's).
    pub fn resize_settings(&self) -> Option<Resize> {
        let Op::Resize {
            mode,
            coordinate_transformation,
            nearest_mode,
            cubic_coeff_a,
            exclude_outside,
            antialias,
            extrapolation_value,
            ..
        } = self
        else {
            return None;
        };
        Some(Resize {
            extrapolation: *extrapolation_value,
            cubic_a: *cubic_coeff_a,
            exclude_outside: *exclude_outside,
            antialias: *antialias,
            ..Resize::from_onnx(mode, coordinate_transformation, nearest_mode)?
        })
    }

    /// The ONNX op type.
    pub fn onnx_type(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::ConvTranspose { .. } => "ConvTranspose",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Unary(u) => match u {
                Unary::Relu => "Relu",
                Unary::Clip(..) => "Clip",
                Unary::LeakyRelu(_) => "LeakyRelu",
                Unary::Sigmoid => "Sigmoid",
                Unary::HardSigmoid(..) => "HardSigmoid",
                Unary::HardSwish => "HardSwish",
                Unary::Tanh => "Tanh",
                Unary::Erf => "Erf",
                Unary::Gelu | Unary::GeluTanh => "Gelu",
                Unary::Exp => "Exp",
                Unary::Sqrt => "Sqrt",
                Unary::Neg => "Neg",
                Unary::Abs => "Abs",
                Unary::Sign => "Sign",
                Unary::Floor => "Floor",
                Unary::Ceil => "Ceil",
                Unary::Round => "Round",
                Unary::Reciprocal => "Reciprocal",
                Unary::Log => "Log",
                Unary::Softplus => "Softplus",
                Unary::Softsign => "Softsign",
                Unary::Elu(_) => "Elu",
                Unary::Selu(..) => "Selu",
                Unary::Celu(_) => "Celu",
                Unary::Mish => "Mish",
                Unary::Shrink(..) => "Shrink",
                Unary::ThresholdedRelu(_) => "ThresholdedRelu",
                Unary::Not => "Not",
                Unary::IsNaN => "IsNaN",
                Unary::IsInf { .. } => "IsInf",
                Unary::Sin => "Sin",
                Unary::Cos => "Cos",
            },
            Op::Binary(b) => match b {
                Binary::Add => "Add",
                Binary::Sub => "Sub",
                Binary::Mul => "Mul",
                Binary::Div => "Div",
                Binary::PRelu => "PRelu",
                Binary::Max => "Max",
                Binary::Min => "Min",
                Binary::Pow => "Pow",
                Binary::Equal => "Equal",
                Binary::Less => "Less",
                Binary::Greater => "Greater",
                Binary::LessOrEqual => "LessOrEqual",
                Binary::GreaterOrEqual => "GreaterOrEqual",
                Binary::And => "And",
                Binary::Or => "Or",
                Binary::Xor => "Xor",
                Binary::Mod { .. } => "Mod",
            },
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::Lrn { .. } => "LRN",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice => "Slice",
            Op::Pad { .. } => "Pad",
            Op::Resize { .. } => "Resize",
            Op::Einsum { .. } => "Einsum",
            Op::Softmax { .. } => "Softmax",
            Op::ReduceMean { .. } => "ReduceMean",
            Op::Reduce { op, .. } => op.onnx(),
            Op::Arg { min: false, .. } => "ArgMax",
            Op::Arg { min: true, .. } => "ArgMin",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Hardmax { .. } => "Hardmax",
            Op::TopK { .. } => "TopK",
            Op::CumSum { .. } => "CumSum",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::DepthToSpace { .. } => "DepthToSpace",
            Op::SpaceToDepth { .. } => "SpaceToDepth",
            Op::Trilu { .. } => "Trilu",
            Op::ScatterNd { .. } => "ScatterND",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::InstanceNorm { .. } => "InstanceNormalization",
            Op::GroupNorm { .. } => "GroupNormalization",
            Op::MeanVarianceNorm { .. } => "MeanVarianceNormalization",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Identity => "Identity",
            Op::FakeQuant { .. } => "FakeQuant",
            Op::Dropout => "Dropout",
            Op::Shape { .. } => "Shape",
            Op::Size => "Size",
            Op::Range => "Range",
            Op::Expand => "Expand",
            Op::Tile => "Tile",
            Op::Where => "Where",
            Op::CastLike => "CastLike",
            Op::Gather { .. } => "Gather",
            Op::GatherElements { .. } => "GatherElements",
            Op::Cast { .. } => "Cast",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
        }
    }

    /// Ops that only reinterpret their input's shape (no data movement on the GPU).
    pub fn is_view(&self) -> bool {
        matches!(
            self,
            Op::Flatten { .. }
                | Op::Reshape { .. }
                | Op::Squeeze { .. }
                | Op::Unsqueeze { .. }
                | Op::Identity
                | Op::Dropout
        )
    }
}

/// One node: an op from named inputs to named outputs ("" = an omitted optional input).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// A model: runtime inputs and outputs, nodes in topological order, constants, shapes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    /// Default-domain opset the model was imported with.
    pub opset: i64,
    /// Runtime inputs (not constants), in model order.
    pub inputs: Vec<String>,
    /// Declared dims of each runtime input (named dims resolved at [`Graph::resolve`]).
    pub input_dims: HashMap<String, Vec<Dim>>,
    /// Declared element type of each runtime input (absent: f32).
    pub input_types: HashMap<String, ElemType>,
    pub outputs: Vec<String>,
    pub nodes: Vec<Node>,
    /// Weights and constants by name.
    pub consts: BTreeMap<String, Const>,
    /// Static shape of every runtime value, filled by [`Graph::resolve`].
    pub shapes: HashMap<String, Vec<usize>>,
    /// Element type of every runtime value that is not f32, filled by [`Graph::resolve`].
    pub types: HashMap<String, ElemType>,
    /// Conv and pool nodes whose pads follow ONNX's `auto_pad` (by node name): their pads
    /// are set from the input's size at [`Graph::resolve`].
    pub auto_pads: BTreeMap<String, crate::graph::attrs::AutoPad>,
    /// Metadata carried through export.
    pub producer: String,
}

impl Graph {
    /// The node that produces `value`, if any.
    pub fn producer_of(&self, value: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == value))
    }

    /// Indices of the nodes that read `value`.
    pub fn consumers_of(&self, value: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.inputs.iter().any(|i| i == value))
            .map(|(i, _)| i)
            .collect()
    }

    /// The index of the node named `name`; a typed error naming the model when there is none.
    pub fn node_index(&self, name: &str) -> crate::error::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| crate::error::Error::Graph {
                model: self.name.clone(),
                message: format!("no node named '{name}'"),
            })
    }

    /// The element type of a value: a constant's own, a runtime value's as resolved, an
    /// input's as declared (f32 when nothing says otherwise).
    pub fn elem_type(&self, value: &str) -> ElemType {
        if let Some(&t) = self.types.get(value) {
            // A runtime value, or a value input bound as a constant (its declared type).
            return t;
        }
        match self.consts.get(value) {
            Some(Const::F32(_)) => ElemType::F32,
            Some(Const::I64(_)) => ElemType::I64,
            None => self.input_types.get(value).copied().unwrap_or_default(),
        }
    }

    /// An f32 constant by name.
    pub fn weight(&self, name: &str) -> Option<&ArrayD<f32>> {
        match self.consts.get(name) {
            Some(Const::F32(a)) => Some(a),
            _ => None,
        }
    }

    /// Refuses NaN in any f32 constant, and infinite values in the weights, biases and
    /// scales of Conv, ConvTranspose, Gemm, MatMul and the normalizations (a pipeline that
    /// fits encodings or factors to them needs them finite), naming the first such constant.
    /// An infinity elsewhere is a value the model means: attention masks fill with -inf.
    pub fn check_finite_weights(&self) -> crate::error::Result<()> {
        let params: std::collections::HashSet<&str> = self
            .nodes
            .iter()
            .filter(|n| {
                matches!(
                    n.op,
                    Op::Conv(_)
                        | Op::ConvTranspose { .. }
                        | Op::Gemm { .. }
                        | Op::MatMul
                        | Op::BatchNorm { .. }
                        | Op::LayerNorm { .. }
                        | Op::InstanceNorm { .. }
                        | Op::GroupNorm { .. }
                )
            })
            .flat_map(|n| &n.inputs)
            .map(String::as_str)
            .collect();
        for (name, c) in &self.consts {
            if let Const::F32(a) = c {
                let param = params.contains(name.as_str());
                let bad = a
                    .iter()
                    .filter(|v| v.is_nan() || (param && v.is_infinite()))
                    .count();
                if bad > 0 {
                    return Err(crate::error::Error::NonFinite {
                        op: "model weights",
                        tensor: name.clone(),
                        count: bad as u64,
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks labels for `samples` samples against the classes of the first output (its dim 1,
    /// in a resolved graph): one label each, every label a class.
    pub fn check_labels(
        &self,
        op: &'static str,
        labels: &[usize],
        samples: usize,
    ) -> crate::error::Result<()> {
        use crate::error::Error;
        if labels.len() != samples {
            return Err(Error::invalid(
                op,
                "--labels",
                labels.len(),
                format!("need one label per evaluation sample ({samples})"),
            ));
        }
        let classes = self
            .outputs
            .first()
            .and_then(|o| self.shapes.get(o))
            .and_then(|s| s.get(1))
            .copied()
            .unwrap_or(0);
        match labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            Some((i, &l)) => Err(Error::invalid(
                op,
                "--labels",
                l,
                format!("label {i} is outside the model's {classes} classes"),
            )),
            None => Ok(()),
        }
    }

    /// Number of f32 weight elements.
    pub fn param_count(&self) -> usize {
        self.consts
            .values()
            .map(|c| if let Const::F32(a) = c { a.len() } else { 0 })
            .sum()
    }

    /// A fresh value or node name starting with `stem` that is not used yet.
    pub fn unique_name(&self, stem: &str) -> String {
        let taken = |s: &str| {
            self.consts.contains_key(s)
                || self.shapes.contains_key(s)
                || self
                    .nodes
                    .iter()
                    .any(|n| n.name == s || n.outputs.iter().any(|o| o == s))
        };
        if !taken(stem) {
            return stem.to_string();
        }
        (1..)
            .map(|i| format!("{stem}_{i}"))
            .find(|s| !taken(s))
            .expect("some suffix is free")
    }
}

impl Graph {
    /// The part of the graph that computes `outputs` (nodes they depend on), with them as
    /// the graph's outputs. Constants and shapes are kept whole.
    pub fn truncated(&self, outputs: &[String]) -> Graph {
        let mut needed: std::collections::HashSet<&str> =
            outputs.iter().map(String::as_str).collect();
        let mut keep = vec![false; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| needed.contains(o.as_str())) {
                keep[i] = true;
                needed.extend(n.inputs.iter().map(String::as_str));
            }
        }
        let mut g = self.clone();
        g.nodes = self
            .nodes
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|(n, _)| n.clone())
            .collect();
        g.outputs = outputs.to_vec();
        g
    }
}

impl Graph {
    /// The values that cross the cut before node `at` of a resolved graph: runtime inputs and
    /// values of `nodes[..at]` that `nodes[at..]` read or that are graph outputs, in order of
    /// first definition.
    pub fn crossing(&self, at: usize) -> Vec<String> {
        let at = at.min(self.nodes.len());
        let later: std::collections::HashSet<&str> = self.nodes[at..]
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .chain(self.outputs.iter().map(String::as_str))
            .collect();
        self.inputs
            .iter()
            .chain(self.nodes[..at].iter().flat_map(|n| n.outputs.iter()))
            .filter(|v| later.contains(v.as_str()) && !self.consts.contains_key(v.as_str()))
            .cloned()
            .collect()
    }

    /// Nodes `from..to` of a resolved graph as a graph of their own (to be resolved at the
    /// same batch): its inputs are the values crossing the cut before `from` that these nodes
    /// read, with their resolved shapes as fixed dims; its outputs the values crossing the cut
    /// before `to` that they compute (the graph's outputs where `to` is the end); its
    /// constants those they read.
    pub fn segment(&self, from: usize, to: usize) -> Graph {
        let to = to.clamp(from, self.nodes.len());
        let nodes = self.nodes[from..to].to_vec();
        let read: std::collections::HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .collect();
        let inputs: Vec<String> = self
            .crossing(from)
            .into_iter()
            .filter(|v| read.contains(v.as_str()))
            .collect();
        let made: std::collections::HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(String::as_str))
            .collect();
        let outputs = self
            .crossing(to)
            .into_iter()
            .filter(|v| made.contains(v.as_str()))
            .collect();
        let input_dims = inputs
            .iter()
            .map(|i| {
                let dims = self
                    .shapes
                    .get(i)
                    .map_or(Vec::new(), |s| s.iter().map(|&d| Dim::Fixed(d)).collect());
                (i.clone(), dims)
            })
            .collect();
        let input_types = inputs
            .iter()
            .map(|i| (i.clone(), self.elem_type(i)))
            .collect();
        let consts = self
            .consts
            .iter()
            .filter(|(k, _)| read.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Graph {
            name: self.name.clone(),
            opset: self.opset,
            inputs,
            input_types,
            input_dims,
            outputs,
            nodes,
            consts,
            shapes: HashMap::new(),
            types: HashMap::new(),
            auto_pads: self.auto_pads.clone(),
            producer: self.producer.clone(),
        }
    }
}

impl Graph {
    /// Multiply-accumulates of one node for the graph's resolved batch (Conv, ConvTranspose,
    /// Gemm, MatMul; 0 for the rest).
    pub fn macs(&self, n: &Node) -> u64 {
        let shape = |v: &str| {
            self.shapes
                .get(v)
                .cloned()
                .or_else(|| self.consts.get(v).map(|c| c.shape().to_vec()))
                .unwrap_or_default()
        };
        let prod = |s: &[usize]| s.iter().map(|&d| d as u64).product::<u64>();
        match &n.op {
            Op::Conv(_) => {
                let (y, w) = (shape(&n.outputs[0]), shape(&n.inputs[1]));
                prod(&y) * prod(&w[1..])
            }
            Op::ConvTranspose { .. } => {
                let (x, w) = (shape(&n.inputs[0]), shape(&n.inputs[1]));
                prod(&x) * prod(&w[1..])
            }
            Op::Gemm { trans_a, .. } => {
                let (a, y) = (shape(&n.inputs[0]), shape(&n.outputs[0]));
                let k = if *trans_a { a[0] } else { a[1] };
                prod(&y) * k as u64
            }
            Op::MatMul => {
                let (a, y) = (shape(&n.inputs[0]), shape(&n.outputs[0]));
                prod(&y) * *a.last().unwrap_or(&1) as u64
            }
            _ => 0,
        }
    }
}
