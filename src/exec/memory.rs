//! Memory planning for a plan's activations: values are numbered, each lives in a buffer
//! slot, and a slot is handed to a later value once every value living in it is dead.
//!
//! Liveness comes from the graph before lowering: a value dies after the last node that
//! reads it ([`Liveness`]). Views (Reshape, Flatten …) share their input's slot; pinned
//! values (inputs, outputs, taps) keep theirs for the whole plan.

use std::collections::HashMap;

use crate::error::{DType, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::graph::ir::{Graph, Node, Op};

/// Which inputs of a node are read at run time (the others are folded attributes).
pub(crate) fn data_inputs(node: &Node) -> &[String] {
    let n = match node.op {
        Op::Reshape { .. }
        | Op::Pad { .. }
        | Op::Slice
        | Op::Resize { .. }
        | Op::Expand
        | Op::Tile
        | Op::Reduce { .. }
        | Op::TopK { .. }
        | Op::CumSum { .. }
        | Op::Trilu { .. } => 1,
        _ => node.inputs.len(),
    };
    &node.inputs[..n.min(node.inputs.len())]
}

/// Value ids and the index of the last node reading each value.
pub(crate) struct Liveness {
    ids: HashMap<String, usize>,
    last_use: Vec<Option<usize>>,
}

impl Liveness {
    /// Numbers every runtime value of `g` (inputs, then node outputs in order).
    pub fn of(g: &Graph) -> Liveness {
        let mut l = Liveness {
            ids: HashMap::new(),
            last_use: Vec::new(),
        };
        for i in &g.inputs {
            l.id(i);
        }
        for (k, n) in g.nodes.iter().enumerate() {
            for input in data_inputs(n)
                .iter()
                .filter(|v| !v.is_empty() && !g.consts.contains_key(*v))
            {
                let id = l.id(input);
                l.last_use[id] = Some(k);
            }
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                l.id(o);
            }
        }
        l
    }

    fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        self.ids.insert(name.to_string(), self.last_use.len());
        self.last_use.push(None);
        self.last_use.len() - 1
    }

    /// The id of a runtime value.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }

    /// Values whose last reader is node `k`.
    pub fn dying_at(&self, node: &Node, k: usize) -> Vec<usize> {
        let mut out: Vec<usize> = data_inputs(node)
            .iter()
            .filter_map(|v| self.get(v))
            .filter(|&id| self.last_use[id] == Some(k))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether nothing reads the value.
    pub fn unread(&self, id: usize) -> bool {
        self.last_use[id].is_none()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.last_use.len()
    }
}

/// Buffer slots shared by liveness.
#[derive(Default)]
pub(crate) struct Memory {
    /// Each slot's whole buffer (an f32 view of its capacity).
    slots: Vec<GpuTensor>,
    /// Live values (and pins) per slot.
    users: Vec<usize>,
    free: Vec<usize>,
}

impl Memory {
    /// A slot for a new tensor of `shape`: the smallest free one that fits, or a new one. The
    /// slot starts with one user.
    pub fn alloc(
        &mut self,
        gpu: &Gpu,
        shape: &[usize],
        dtype: DType,
    ) -> Result<(usize, GpuTensor)> {
        self.alloc_within(gpu, shape, dtype, usize::MAX)
    }

    /// [`Memory::alloc`] taking a free slot only if it holds at most `slack` times the
    /// tensor (a value kept to the end should not pin a much larger slot).
    pub fn alloc_within(
        &mut self,
        gpu: &Gpu,
        shape: &[usize],
        dtype: DType,
        slack: usize,
    ) -> Result<(usize, GpuTensor)> {
        let n: usize = shape.iter().product();
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &s)| {
                let c = self.slots[s].capacity();
                c >= n && c / slack.max(1) <= n.max(1)
            })
            .min_by_key(|(_, &s)| self.slots[s].capacity())
            .map(|(i, _)| i);
        let slot = match best {
            Some(i) => self.free.swap_remove(i),
            None => {
                self.slots.push(gpu.empty(&[n.max(1)], DType::F32)?);
                self.users.push(0);
                self.slots.len() - 1
            }
        };
        self.users[slot] = 1;
        Ok((slot, self.slots[slot].view(shape, dtype)?))
    }

    /// Every slot's whole buffer, by slot.
    pub fn buffers(&self) -> &[GpuTensor] {
        &self.slots
    }

    /// Live values (and pins) per slot.
    pub fn users(&self) -> &[usize] {
        &self.users
    }

    /// Adds a buffer that nothing uses any more (another plan's spare slot) as a free slot.
    pub fn donate(&mut self, buffer: GpuTensor) {
        self.slots.push(buffer);
        self.users.push(0);
        self.free.push(self.slots.len() - 1);
    }

    /// One more user of `slot` (a view, or a pin).
    pub fn retain(&mut self, slot: usize) {
        self.users[slot] += 1;
    }

    /// One user fewer; the slot is free for reuse when none is left.
    pub fn release(&mut self, slot: usize) {
        self.users[slot] -= 1;
        if self.users[slot] == 0 {
            self.free.push(slot);
        }
    }
}
