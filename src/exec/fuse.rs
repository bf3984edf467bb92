//! Epilogue fusion: the nodes after a convolution or GEMM that its kernel applies in its
//! epilogue ([`crate::ops::epilogue`]) instead of each running as its own dispatch over
//! memory — an inference BatchNormalization (after a Conv), a residual Add, an activation —
//! and the fake quantizers of the value before the activation and of the value it ends on. A
//! node is absorbed only where nothing else can see the value before it: the value has that
//! node as its one reader, is not an output or tap, and has no quantizer of its own unless the
//! node is the activation (its quantizer is then applied in the epilogue); a residual operand
//! is computed before the head node and has the output's shape. The kernels give the unfused bits, so fusing changes no result.

use std::collections::{HashMap, HashSet};

use crate::exec::lower::{FakeQuant, Simulation};
use crate::graph::attrs::{Binary, Unary};
use crate::graph::ir::{Graph, Op};

/// What a head node's kernel applies after its bias, and the nodes that are then not run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fusion {
    /// The BatchNormalization node (index) whose affine map is applied per channel.
    pub affine: Option<usize>,
    /// The value added (the other operand of an Add).
    pub residual: Option<String>,
    /// The quantizer of the value before the activation (per-tensor only).
    pub quant_pre: Option<FakeQuant>,
    pub act: Option<Unary>,
    /// The absorbed nodes, in order.
    pub followers: Vec<usize>,
    /// The value the kernel writes (the last absorbed node's output).
    pub out: String,
    /// The quantizer of `out`, applied in the epilogue (per-tensor only).
    pub quant: Option<FakeQuant>,
}

/// Finds fusions in one graph (readers and producers indexed once).
pub(crate) struct Fuser<'g> {
    g: &'g Graph,
    keep: &'g HashSet<&'g str>,
    sim: Option<&'g dyn Simulation>,
    readers: HashMap<&'g str, Vec<usize>>,
    producer: HashMap<&'g str, usize>,
}

/// How far a chain has come: each part may follow only the ones before it in the epilogue.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Stage {
    Head,
    Affine,
    Residual,
    Act,
}

impl<'g> Fuser<'g> {
    pub fn new(g: &'g Graph, keep: &'g HashSet<&'g str>, sim: Option<&'g dyn Simulation>) -> Self {
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut producer = HashMap::new();
        for (k, n) in g.nodes.iter().enumerate() {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                readers.entry(i.as_str()).or_default().push(k);
            }
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                producer.insert(o.as_str(), k);
            }
        }
        Fuser {
            g,
            keep,
            sim,
            readers,
            producer,
        }
    }

    fn owned_by_sim(&self, k: usize) -> bool {
        self.sim.is_some_and(|s| s.owns(&self.g.nodes[k]))
    }

    /// True when `v` can be consumed inside a kernel: nobody but `reader` sees it (its
    /// quantizer, if any, is for the caller to check).
    fn private_to(&self, v: &str, reader: usize) -> bool {
        !self.keep.contains(v) && self.readers.get(v).is_some_and(|r| r == &[reader])
    }

    /// The per-tensor quantizer of `v`: `Ok(None)` for none, `Err(())` for one an epilogue
    /// cannot apply.
    fn quantizer(&self, v: &str) -> Result<Option<FakeQuant>, ()> {
        match self.sim.and_then(|s| s.quantizer(v)) {
            None => Ok(None),
            Some(q) if q.table.len() == 4 => Ok(Some(q)),
            Some(_) => Err(()),
        }
    }

    /// The fusion after node `k`, if its op has an epilogue and anything follows it.
    pub fn after(&self, k: usize) -> Option<Fusion> {
        let head = &self.g.nodes[k];
        let conv = match &head.op {
            Op::Conv(_) => true,
            // A Gemm whose C is computed at run time adds it after the product: no epilogue.
            Op::Gemm { .. }
                if head
                    .inputs
                    .get(2)
                    .is_some_and(|c| !c.is_empty() && !self.g.consts.contains_key(c)) =>
            {
                return None
            }
            Op::Gemm { .. } | Op::MatMul => false,
            _ => return None,
        };
        if self.owned_by_sim(k) || head.outputs.len() != 1 {
            return None;
        }
        let shape = self.g.shapes.get(&head.outputs[0])?;
        let mut f = Fusion {
            out: head.outputs[0].clone(),
            ..Fusion::default()
        };
        let mut stage = Stage::Head;
        while stage < Stage::Act {
            let v = f.out.as_str();
            let Some(&[next]) = self.readers.get(v).map(Vec::as_slice) else {
                break;
            };
            let n = &self.g.nodes[next];
            if !self.private_to(v, next)
                || self.owned_by_sim(next)
                || n.outputs.len() != 1
                || self.g.shapes.get(&n.outputs[0]) != Some(shape)
            {
                break;
            }
            let quantized = match self.quantizer(v) {
                Ok(q) => q,
                Err(()) => break,
            };
            if quantized.is_some() && !matches!(n.op, Op::Unary(_)) {
                break;
            }
            match &n.op {
                Op::BatchNorm { .. }
                    if conv
                        && stage < Stage::Affine
                        && n.inputs.len() == 5
                        && n.inputs[1..].iter().all(|i| self.g.consts.contains_key(i)) =>
                {
                    f.affine = Some(next);
                    stage = Stage::Affine;
                }
                Op::Binary(Binary::Add) if stage < Stage::Residual && n.inputs.len() == 2 => {
                    let other = if n.inputs[0] == v {
                        &n.inputs[1]
                    } else {
                        &n.inputs[0]
                    };
                    let before = match self.producer.get(other.as_str()) {
                        Some(&p) => p < k,
                        None => self.g.inputs.contains(other),
                    };
                    if other == v || !before || self.g.shapes.get(other) != Some(shape) {
                        break;
                    }
                    f.residual = Some(other.clone());
                    stage = Stage::Residual;
                }
                Op::Unary(u) => {
                    f.quant_pre = quantized;
                    f.act = Some(*u);
                    stage = Stage::Act;
                }
                _ => break,
            }
            f.followers.push(next);
            f.out = n.outputs[0].clone();
        }
        f.quant = self.quantizer(&f.out).ok().flatten();
        (!f.followers.is_empty() || f.quant.is_some()).then_some(f)
    }
}
