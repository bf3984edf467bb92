//! [`Prepared`]: a model as the pipelines use it — the imported graph, its batch norms folded
//! when asked (as AIMET prepares a model), and the [`Edits`] passes made since — resolved for
//! any batch size on demand, each resolution computed once.
//!
//! A resolved graph is specific to its batch: shape chains (`Shape -> Gather -> Concat ->
//! Reshape`) fold into constants that bake the batch in. So edits are kept by name and
//! replayed on each resolution instead of being made to one resolved copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::graph::ir::{Const, Graph, Node};
use crate::graph::passes::bn_fold::{self, FoldedBn};

/// What passes changed in a prepared model, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Edits {
    /// Constants replaced (equalized or bias-corrected weights).
    pub consts: BTreeMap<String, Const>,
    /// Nodes replaced, by node name (CLE's Clip -> Relu).
    pub replaced: BTreeMap<String, Node>,
    /// Nodes inserted, each after the named node, in order (CLE's per-channel clip bounds).
    /// Their new outputs take the shape of the node's first input.
    pub inserted: Vec<(String, Node)>,
}

impl Edits {
    /// Constant replacements only.
    pub fn consts(consts: BTreeMap<String, Const>) -> Edits {
        Edits {
            consts,
            ..Default::default()
        }
    }

    /// The edits that turn `before` into `after` (two resolutions of the same model; `after`
    /// may replace nodes and constants and insert nodes, never remove them).
    pub fn between(before: &Graph, after: &Graph) -> Result<Edits> {
        let consts = after
            .consts
            .iter()
            .filter(|(k, v)| before.consts.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let old: HashMap<&str, &Node> = before.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut e = Edits {
            consts,
            ..Default::default()
        };
        for (i, n) in after.nodes.iter().enumerate() {
            match old.get(n.name.as_str()) {
                Some(o) if *o != n => {
                    e.replaced.insert(n.name.clone(), n.clone());
                }
                Some(_) => {}
                None if i > 0 => e
                    .inserted
                    .push((after.nodes[i - 1].name.clone(), n.clone())),
                None => {
                    return Err(Error::Graph {
                        model: after.name.clone(),
                        message: format!("a pass inserted '{}' before every node", n.name),
                    })
                }
            }
        }
        Ok(e)
    }

    /// Adds `later` on top (later replacements win).
    pub fn extend(&mut self, later: Edits) {
        self.consts.extend(later.consts);
        self.replaced.extend(later.replaced);
        self.inserted.extend(later.inserted);
    }

    fn changes_ops(&self) -> bool {
        !self.replaced.is_empty() || !self.inserted.is_empty()
    }

    fn apply(&self, g: &mut Graph) -> Result<()> {
        for (k, v) in &self.consts {
            g.consts.insert(k.clone(), v.clone());
        }
        for n in g.nodes.iter_mut() {
            if let Some(r) = self.replaced.get(&n.name) {
                *n = r.clone();
            }
        }
        for (after, node) in &self.inserted {
            let i = g
                .nodes
                .iter()
                .position(|n| &n.name == after)
                .ok_or_else(|| Error::Graph {
                    model: g.name.clone(),
                    message: format!(
                        "inserted node '{}' follows '{after}', which is gone",
                        node.name
                    ),
                })?;
            g.nodes.insert(i + 1, node.clone());
        }
        if self.changes_ops() {
            for i in 0..g.nodes.len() {
                for o in g.nodes[i].outputs.clone() {
                    if !g.shapes.contains_key(&o) {
                        let s = g
                            .shapes
                            .get(&g.nodes[i].inputs[0])
                            .cloned()
                            .unwrap_or_default();
                        g.shapes.insert(o, s);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A resolution's key: the batch (`None`: every dim as the inputs give it), named dims, and
/// the values of value inputs (shape and bits).
type Key = (Option<usize>, Vec<(String, usize)>, Vec<ValueKey>);

/// A value input's name, shape and bits, as part of a resolution's key.
pub type ValueKey = (String, Vec<usize>, Vec<u64>);

/// The key of a value input's value.
pub fn value_key(name: &str, c: &Const) -> ValueKey {
    let bits = match c {
        Const::F32(a) => a.iter().map(|v| v.to_bits() as u64).collect(),
        Const::I64(a) => a.iter().map(|&v| v as u64).collect(),
    };
    (name.to_string(), c.shape().to_vec(), bits)
}

/// Resolved graphs by key.
type Resolutions = HashMap<Key, Arc<Graph>>;

/// A source graph, optionally BN-folded, with edits; resolved per batch and named dims.
pub struct Prepared {
    source: Arc<Graph>,
    fold_bn: bool,
    /// Sizes of named dims other than the batch, unless the caller binds them.
    dims: HashMap<String, usize>,
    edits: Edits,
    /// Only nodes `from..to` of every resolution of this whole model (see
    /// [`Graph::segment`]).
    segment: Option<(Arc<Prepared>, usize, usize)>,
    cache: Mutex<Resolutions>,
}

impl Clone for Prepared {
    fn clone(&self) -> Prepared {
        Prepared {
            source: self.source.clone(),
            fold_bn: self.fold_bn,
            dims: self.dims.clone(),
            edits: self.edits.clone(),
            segment: self.segment.clone(),
            cache: Mutex::new(self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        }
    }
}

impl From<Graph> for Prepared {
    fn from(g: Graph) -> Prepared {
        Prepared::new(g)
    }
}

impl Prepared {
    /// The imported graph as it is (resolved per batch, nothing folded).
    pub fn new(source: Graph) -> Prepared {
        Prepared {
            source: Arc::new(source),
            fold_bn: false,
            dims: HashMap::new(),
            edits: Edits::default(),
            segment: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The imported graph with its batch norms folded into neighbouring Conv/Gemm nodes as
    /// AIMET folds them; `dims` sizes named dims other than the batch. Returns what folded.
    pub fn bn_folded(
        source: Graph,
        dims: HashMap<String, usize>,
    ) -> Result<(Prepared, Vec<FoldedBn>)> {
        let p = Prepared {
            source: Arc::new(source),
            fold_bn: true,
            dims,
            edits: Edits::default(),
            segment: None,
            cache: Mutex::new(HashMap::new()),
        };
        let mut g = p.source.as_ref().clone();
        g.resolve_with_batch(&p.dims, Some(1))?;
        let folded = bn_fold::fold_batch_norms(&mut g)?;
        p.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((Some(1), Vec::new(), Vec::new()), Arc::new(g));
        Ok((p, folded))
    }

    /// The same model without its edits (the BN-folded original when it was folded).
    pub fn original(&self) -> Prepared {
        Prepared {
            source: self.source.clone(),
            fold_bn: self.fold_bn,
            dims: self.dims.clone(),
            edits: Edits::default(),
            segment: self.segment.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Only nodes `from..to` of this model (as resolved, with its edits) at every batch: a
    /// graph whose inputs and outputs are the values crossing the two cuts
    /// ([`Graph::segment`]). Node positions are those of [`Prepared::at`].
    pub fn segment(&self, from: usize, to: usize) -> Prepared {
        Prepared {
            source: self.source.clone(),
            fold_bn: self.fold_bn,
            dims: self.dims.clone(),
            edits: self.edits.clone(),
            segment: Some((Arc::new(self.clone()), from, to)),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The graph whose inputs and declared dims a run is given: the source, or for a segment
    /// the segment at batch 1 (fixed dims; named dims of the whole model take its own sizes).
    pub fn signature(&self) -> Result<Arc<Graph>> {
        match &self.segment {
            Some(_) => self.at(1),
            None => Ok(self.source.clone()),
        }
    }

    /// The graph as imported.
    pub fn source(&self) -> &Graph {
        &self.source
    }

    /// The edits so far.
    pub fn edits(&self) -> &Edits {
        &self.edits
    }

    /// Whether any node was replaced or inserted (the FP32 function may differ).
    pub fn changes_ops(&self) -> bool {
        self.edits.changes_ops()
    }

    /// Adds edits; every later resolution includes them.
    pub fn edit(&mut self, edits: Edits) {
        self.edits.extend(edits);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The model resolved for `batch` with its own named dims.
    pub fn at(&self, batch: usize) -> Result<Arc<Graph>> {
        self.resolved(batch, &[])
    }

    /// The model resolved for `batch`, named dims bound from `dims` first, then from the
    /// model's own sizes.
    pub fn resolved(&self, batch: usize, dims: &[(String, usize)]) -> Result<Arc<Graph>> {
        self.resolved_with(Some(batch), dims, &[])
    }

    /// The model resolved for `batch` (`None`: dim 0 of every input as declared or bound by
    /// `dims`, like any other dim), named dims bound from `dims` first, then from the model's
    /// own sizes; the value inputs in `values` bound to those values
    /// ([`Graph::resolve_with`]).
    pub fn resolved_with(
        &self,
        batch: Option<usize>,
        dims: &[(String, usize)],
        values: &[(String, Const)],
    ) -> Result<Arc<Graph>> {
        let key = (
            batch,
            dims.to_vec(),
            values.iter().map(|(n, c)| value_key(n, c)).collect(),
        );
        if let Some(g) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(g.clone());
        }
        let g = match &self.segment {
            Some((whole, from, to)) => {
                let mut g = whole
                    .resolved_with(batch, dims, values)?
                    .segment(*from, *to);
                g.resolve_with_batch(&HashMap::new(), batch)?;
                g
            }
            None => {
                let mut all = self.dims.clone();
                all.extend(dims.iter().cloned());
                let mut g = self.source.as_ref().clone();
                g.resolve_with(&all, batch, values)?;
                if self.fold_bn {
                    bn_fold::fold_batch_norms(&mut g)?;
                }
                self.edits.apply(&mut g)?;
                g
            }
        };
        let g = Arc::new(g);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, g.clone());
        Ok(g)
    }
}
