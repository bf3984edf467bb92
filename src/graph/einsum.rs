//! Einsum as the nodes that compute it, rewritten at resolution once the operands' shapes are
//! known: labels summed out of one operand alone are a ReduceSum; each further operand is
//! contracted into the running result by one batched MatMul between Transposes and Reshapes
//! (batch labels, then the free labels of each side, then the contracted ones); the result is
//! transposed to the output's order. The equation is parsed as ONNX (and NumPy) read it:
//! `...` for broadcast dims aligned from the right, an implicit output of the labels that
//! appear once, in alphabetical order after the `...` dims. A label repeated within one
//! operand (a diagonal) and a label whose sizes differ between operands are refused.

use std::collections::BTreeSet;

use ndarray::{ArrayD, IxDyn};

use crate::graph::attrs::Reduce;
use crate::graph::ir::{Const, Graph, Node, Op};

type Labels = Vec<char>;

/// The labels of every operand and of the output, `...` expanded (as characters from a
/// private range, ordered before the letters).
fn parse(equation: &str, ranks: &[usize]) -> Result<(Vec<Labels>, Labels), String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(format!(
            "equation '{equation}' has {} operands, the node {}",
            terms.len(),
            ranks.len()
        ));
    }
    // An ellipsis label for dim k of the widest `...` (aligned from the right).
    let ell = |k: usize| char::from_u32(0xE000 + k as u32).expect("private use range");
    let letters = |t: &str| -> Result<usize, String> {
        let body = t.replacen("...", "", 1);
        if let Some(c) = body.chars().find(|c| !c.is_ascii_alphabetic()) {
            return Err(format!("equation '{equation}': '{c}' is not a label"));
        }
        Ok(body.len())
    };
    let mut widest = 0;
    for (t, &r) in terms.iter().zip(ranks) {
        let n = letters(t)?;
        if t.contains("...") {
            widest = widest.max(r.checked_sub(n).ok_or_else(|| {
                format!("equation '{equation}': term '{t}' names more dims than its rank {r}")
            })?);
        } else if n != r {
            return Err(format!(
                "equation '{equation}': term '{t}' names {n} dims, its operand has {r}"
            ));
        }
    }
    let expand = |t: &str, dims: usize| -> Labels {
        let mut out = Vec::new();
        let (before, after) = t.split_once("...").unwrap_or((t, ""));
        out.extend(before.chars());
        if t.contains("...") {
            out.extend((widest - dims..widest).map(ell));
        }
        out.extend(after.chars());
        out
    };
    let mut ops = Vec::new();
    for (t, &r) in terms.iter().zip(ranks) {
        let labels = expand(t, r - letters(t)?);
        let mut seen = BTreeSet::new();
        if let Some(c) = labels.iter().find(|c| !seen.insert(**c)) {
            return Err(format!(
                "equation '{equation}': label '{c}' repeats within term '{t}' (a diagonal), \
                 which is not supported"
            ));
        }
        ops.push(labels);
    }
    let out = match rhs {
        Some(r) => {
            letters(r)?;
            if !r.contains("...") && widest > 0 {
                return Err(format!(
                    "equation '{equation}': the output drops the '...' dims, which is not \
                     supported"
                ));
            }
            let out = expand(r, widest);
            let mut seen = BTreeSet::new();
            for c in &out {
                if !seen.insert(*c) {
                    return Err(format!("equation '{equation}': output label '{c}' repeats"));
                }
                if !ops.iter().any(|o| o.contains(c)) {
                    return Err(format!(
                        "equation '{equation}': output label '{c}' is in no operand"
                    ));
                }
            }
            out
        }
        None => {
            let all: Vec<char> = ops.iter().flatten().copied().collect();
            let mut once: Vec<char> = all
                .iter()
                .copied()
                .filter(|c| all.iter().filter(|d| *d == c).count() == 1 && !is_ell(*c))
                .collect();
            once.sort();
            let mut out: Labels = (0..widest).map(ell).collect();
            out.extend(once);
            out
        }
    };
    Ok((ops, out))
}

fn is_ell(c: char) -> bool {
    ('\u{E000}'..'\u{F000}').contains(&c)
}

/// Collects the nodes of one Einsum's rewrite (new constants go into the graph) under names
/// made unique from the node's own.
struct Builder<'a> {
    g: &'a mut Graph,
    stem: String,
    nodes: Vec<Node>,
    count: usize,
}

impl Builder<'_> {
    fn name(&mut self, what: &str) -> String {
        self.count += 1;
        self.g
            .unique_name(&format!("{}/einsum_{what}{}", self.stem, self.count))
    }

    fn push(&mut self, op: Op, inputs: Vec<String>, what: &str) -> String {
        let out = self.name(what);
        self.nodes.push(Node {
            name: out.clone(),
            op,
            inputs,
            outputs: vec![out.clone()],
        });
        out
    }

    /// `x` with dims in the order `to` of its labels `from`.
    fn transpose(&mut self, x: String, from: &Labels, to: &Labels) -> String {
        if from == to {
            return x;
        }
        let perm = to
            .iter()
            .map(|c| from.iter().position(|d| d == c).expect("same labels"))
            .collect();
        self.push(Op::Transpose { perm }, vec![x], "transpose")
    }

    fn reshape(&mut self, x: String, from: &[usize], to: &[usize]) -> String {
        if from == to {
            return x;
        }
        let shape = self.name("shape");
        let dims: Vec<i64> = to.iter().map(|&d| d as i64).collect();
        self.g.consts.insert(
            shape.clone(),
            Const::I64(ArrayD::from_shape_vec(IxDyn(&[dims.len()]), dims).expect("1-D")),
        );
        self.push(Op::Reshape { allow_zero: false }, vec![x, shape], "reshape")
    }

    /// Sums `x` (labels `l`) over the labels `keep` does not hold.
    fn sum_out(&mut self, x: String, l: &Labels, keep: &dyn Fn(char) -> bool) -> (String, Labels) {
        let axes: Vec<i64> = (0..l.len())
            .filter(|&i| !keep(l[i]))
            .map(|i| i as i64)
            .collect();
        if axes.is_empty() {
            return (x, l.clone());
        }
        let kept = l.iter().copied().filter(|&c| keep(c)).collect();
        let op = Op::Reduce {
            op: Reduce::Sum,
            axes,
            keepdims: false,
            noop_empty: false,
        };
        (self.push(op, vec![x], "sum"), kept)
    }
}

impl Graph {
    /// An Einsum node as the nodes that compute it (see the module); `None` for other nodes.
    pub(crate) fn einsum_lowered(&mut self, node: &Node) -> Option<Result<Vec<Node>, String>> {
        let Op::Einsum { equation } = &node.op else {
            return None;
        };
        Some(self.lower_einsum(node, equation))
    }

    fn lower_einsum(&mut self, node: &Node, equation: &str) -> Result<Vec<Node>, String> {
        let shapes: Vec<Vec<usize>> = node
            .inputs
            .iter()
            .map(|v| {
                self.shapes
                    .get(v)
                    .cloned()
                    .or_else(|| self.consts.get(v).map(|c| c.shape().to_vec()))
                    .ok_or(format!("the shape of '{v}' is unknown"))
            })
            .collect::<Result<_, _>>()?;
        if shapes.is_empty() {
            return Err("Einsum needs at least one operand".into());
        }
        let ranks: Vec<usize> = shapes.iter().map(Vec::len).collect();
        let (terms, out) = parse(equation, &ranks)?;
        let mut size = std::collections::HashMap::new();
        for (t, s) in terms.iter().zip(&shapes) {
            for (&c, &d) in t.iter().zip(s) {
                if *size.entry(c).or_insert(d) != d {
                    return Err(format!(
                        "equation '{equation}': label '{}' is {} in one operand and {d} in \
                         another (broadcasting a label is not supported)",
                        if is_ell(c) { '.' } else { c },
                        size[&c]
                    ));
                }
            }
        }
        let dims = |l: &Labels| -> Vec<usize> { l.iter().map(|c| size[c]).collect() };
        let mut b = Builder {
            g: self,
            stem: node.name.clone(),
            nodes: Vec::new(),
            count: 0,
        };
        // Needed after operand j: in the output or in a later operand.
        let needed_after =
            |j: usize, c: char| out.contains(&c) || terms[j + 1..].iter().any(|t| t.contains(&c));
        let (mut acc, mut la) = {
            let first = |c: char| needed_after(0, c);
            b.sum_out(node.inputs[0].clone(), &terms[0], &first)
        };
        for (j, (term, input)) in terms.iter().zip(&node.inputs).enumerate().skip(1) {
            let in_other = |c: char| la.contains(&c) || needed_after(j, c);
            let (x, lb) = b.sum_out(input.clone(), term, &in_other);
            let keep = |c: char| needed_after(j, c);
            let (a, l) = b.sum_out(acc, &la, &|c| keep(c) || lb.contains(&c));
            let batch: Labels = l
                .iter()
                .copied()
                .filter(|c| lb.contains(c) && keep(*c))
                .collect();
            let contract: Labels = l
                .iter()
                .copied()
                .filter(|c| lb.contains(c) && !keep(*c))
                .collect();
            let free_a: Labels = l.iter().copied().filter(|c| !lb.contains(c)).collect();
            let free_b: Labels = lb.iter().copied().filter(|c| !l.contains(c)).collect();
            let prod = |ls: &Labels| dims(ls).iter().product::<usize>();
            let (nb, nm, nk, nn) = (prod(&batch), prod(&free_a), prod(&contract), prod(&free_b));
            let order_a: Labels = [&batch[..], &free_a[..], &contract[..]].concat();
            let order_b: Labels = [&batch[..], &contract[..], &free_b[..]].concat();
            let ta = b.transpose(a, &l, &order_a);
            let ta = b.reshape(ta, &dims(&order_a), &[nb, nm, nk]);
            let tb = b.transpose(x, &lb, &order_b);
            let tb = b.reshape(tb, &dims(&order_b), &[nb, nk, nn]);
            let y = b.push(Op::MatMul, vec![ta, tb], "matmul");
            la = [&batch[..], &free_a[..], &free_b[..]].concat();
            acc = b.reshape(y, &[nb, nm, nn], &dims(&la));
        }
        let (acc, la) = b.sum_out(acc, &la, &|c| out.contains(&c));
        let y = b.transpose(acc, &la, &out);
        let mut nodes = b.nodes;
        // The last node writes the Einsum's output; with none (the identity), an Identity does.
        match nodes.last_mut() {
            Some(last) if last.outputs[0] == y => last.outputs = node.outputs.clone(),
            _ => nodes.push(Node {
                name: format!("{}/identity", node.name),
                op: Op::Identity,
                inputs: vec![y],
                outputs: node.outputs.clone(),
            }),
        }
        Ok(nodes)
    }
}
