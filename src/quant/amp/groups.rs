//! Quantizer groups: the quantizers that take one bitwidth together, and the bit-operations
//! their choice costs.
//!
//! As AIMET forms them: a layer with parameters (Conv, Gemm, MatMul with constant weights) is
//! grouped with the activation quantizers that quantize its input (the nearest quantized
//! values upstream, through ops without quantizers such as Flatten or MaxPool), so that the
//! layer's cost, MACs x weight bits x input activation bits, depends on its group alone. Layers
//! reading one quantized value share a group, and a view's quantizer (the targets' style
//! quantizes Flatten's output again) shares its input's. Activation quantizers no layer with parameters
//! reads (a model output, an Add feeding only other Adds) are groups of their own and cost
//! nothing in bit-operations.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::Result;
use crate::graph::ir::Graph;
use crate::quant::encoding::Encoding;
use crate::quant::sim::{Enabled, QuantSim};

/// Bits of an input that no quantizer rounds (f32).
const FLOAT_BITS: u64 = 32;

/// Quantizers that take one candidate together.
#[derive(Clone, Debug)]
pub struct Group {
    /// Its first layer's name (or its activation's, for a group without parameters).
    pub name: String,
    pub quantizers: Enabled,
    /// (node, MACs at batch 1) of the layers whose cost the group's bitwidths decide.
    pub layers: Vec<(String, u64)>,
    /// The first node position where one of its quantizers applies: runs that change only
    /// this group share everything before it.
    pub position: usize,
}

impl Group {
    /// Multiply-accumulates of its layers (batch 1).
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|(_, m)| m).sum()
    }

    /// Bit-operations of its layers with weights at `param_bw` and inputs at `act_bw` bits.
    pub fn bit_ops(&self, param_bw: u32, act_bw: u32) -> u64 {
        let act = if self.quantizers.activations.is_empty() {
            FLOAT_BITS
        } else {
            act_bw as u64
        };
        self.macs() * param_bw as u64 * act
    }

    /// Whether bitwidths of weights (or of activations) change anything in this group.
    pub fn has_params(&self) -> bool {
        !self.quantizers.params.is_empty()
    }

    /// Whether the group holds activation quantizers.
    pub fn has_activations(&self) -> bool {
        !self.quantizers.activations.is_empty()
    }

    /// The group's encodings from per-bitwidth encoding sets (by bitwidth, then by name).
    pub fn encodings(
        &self,
        acts: &BTreeMap<u32, HashMap<String, Encoding>>,
        params: &BTreeMap<u32, HashMap<String, Encoding>>,
        (param_bw, act_bw): (u32, u32),
    ) -> Vec<(String, Encoding)> {
        let pick = |sets: &BTreeMap<u32, HashMap<String, Encoding>>, bw: u32, n: &String| {
            (n.clone(), sets[&bw][n].clone())
        };
        self.quantizers
            .activations
            .iter()
            .map(|n| pick(acts, act_bw, n))
            .chain(
                self.quantizers
                    .params
                    .iter()
                    .map(|n| pick(params, param_bw, n)),
            )
            .collect()
    }
}

/// The quantized values that quantize `value` as a layer reads it: itself when quantized,
/// else those upstream through ops without quantizers (nothing for constants and raw inputs).
fn feeding(g: &Graph, acts: &BTreeSet<String>, value: &str, out: &mut BTreeSet<String>) {
    let mut todo = vec![value.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(v) = todo.pop() {
        if !seen.insert(v.clone()) || g.consts.contains_key(&v) {
            continue;
        }
        if acts.contains(&v) {
            out.insert(v);
            continue;
        }
        if let Some(p) = g.producer_of(&v) {
            todo.extend(g.nodes[p].inputs.iter().filter(|i| !i.is_empty()).cloned());
        }
    }
}

/// The quantizer groups of a calibrated simulation, in the order their first quantizer
/// applies.
pub fn groups(sim: &QuantSim) -> Result<Vec<Group>> {
    let g = sim.prepared(1)?;
    let acts: BTreeSet<String> = sim
        .activation_encodings()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let params: BTreeSet<String> = sim
        .param_encodings()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    // Union-find over quantizer names.
    let mut parent: HashMap<String, String> = HashMap::new();
    fn root(parent: &mut HashMap<String, String>, n: &str) -> String {
        let p = parent.get(n).cloned().unwrap_or_else(|| n.to_string());
        if p == n {
            return p;
        }
        let r = root(parent, &p);
        parent.insert(n.to_string(), r.clone());
        r
    }
    let mut layer_members: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let own: Vec<String> = n
            .inputs
            .iter()
            .filter(|v| params.contains(*v))
            .cloned()
            .collect();
        if own.is_empty() {
            continue;
        }
        let mut members: BTreeSet<String> = own.into_iter().collect();
        let mut fed = BTreeSet::new();
        for v in n
            .inputs
            .iter()
            .filter(|v| !params.contains(*v) && !v.is_empty())
        {
            feeding(&g, &acts, v, &mut fed);
        }
        members.extend(fed);
        let members: Vec<String> = members.into_iter().collect();
        for m in &members[1..] {
            let (a, b) = (root(&mut parent, &members[0]), root(&mut parent, m));
            if a != b {
                parent.insert(b, a);
            }
        }
        layer_members.push((i, members));
    }
    // A view of a quantized value is quantized on its input's grid: one group.
    for n in &g.nodes {
        let (Some(x), Some(y)) = (n.inputs.first(), n.outputs.first()) else {
            continue;
        };
        if (n.op.is_view() || matches!(n.op, crate::graph::ir::Op::Transpose { .. }))
            && acts.contains(x)
            && acts.contains(y)
        {
            let (a, b) = (root(&mut parent, x), root(&mut parent, y));
            if a != b {
                parent.insert(b, a);
            }
        }
    }
    let position_of = |q: &str| -> usize {
        if acts.contains(q) {
            g.producer_of(q).unwrap_or(0)
        } else {
            g.consumers_of(q).into_iter().min().unwrap_or(0)
        }
    };
    let mut by_root: BTreeMap<String, Group> = BTreeMap::new();
    for (i, members) in &layer_members {
        let r = root(&mut parent, &members[0]);
        let n = &g.nodes[*i];
        let grp = by_root.entry(r).or_insert_with(|| Group {
            name: n.name.clone(),
            quantizers: Enabled::default(),
            layers: Vec::new(),
            position: usize::MAX,
        });
        grp.layers.push((n.name.clone(), g.macs(n)));
    }
    for q in acts.iter().chain(&params) {
        let r = root(&mut parent, q);
        let grp = by_root.entry(r).or_insert_with(|| Group {
            name: q.clone(),
            quantizers: Enabled::default(),
            layers: Vec::new(),
            position: usize::MAX,
        });
        if acts.contains(q) {
            grp.quantizers.activations.insert(q.clone());
        } else {
            grp.quantizers.params.insert(q.clone());
        }
        grp.position = grp.position.min(position_of(q));
    }
    let mut out: Vec<Group> = by_root.into_values().collect();
    out.sort_by_key(|grp| (grp.position, grp.name.clone()));
    Ok(out)
}
