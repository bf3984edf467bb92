//! Nodes rewritten at resolution, once their inputs' shapes are known: a 1-D Conv or pool as
//! the 2-D op of height 1, a Pad's `axes` and a Resize's `axes` and aspect-ratio policy as
//! full-rank constants.

use crate::graph::infer::const_ints;
use crate::graph::ir::{Const, Graph, Node, Op};
use crate::graph::shape::norm_axis;

impl Graph {
    /// A Conv, ConvTranspose or pool of a 3-D (1-D spatial) input as the 2-D op of height 1
    /// between an Unsqueeze and a Squeeze of dim 2 (its attributes were read as 1 x n); `None`
    /// for other nodes.
    pub(crate) fn windows_as_2d(&mut self, node: &Node) -> Option<Vec<Node>> {
        if !matches!(
            node.op,
            Op::Conv(_) | Op::ConvTranspose { .. } | Op::MaxPool(_) | Op::AveragePool(_)
        ) {
            return None;
        }
        let rank = |g: &Graph, v: &str| {
            g.shapes
                .get(v)
                .map(Vec::len)
                .or_else(|| g.consts.get(v).map(|c| c.shape().len()))
        };
        if rank(self, node.inputs.first()?) != Some(3) {
            return None;
        }
        let mut out = Vec::new();
        let mut op2 = node.clone();
        // The weight keeps its name (edits and parameters find it); a 3-D weight is read as
        // [out, in, 1, k] by the shape rule and the lowering.
        let x2 = self.unique_name(&format!("{}/x_2d", node.name));
        out.push(Node {
            name: format!("{x2}/unsqueeze"),
            op: Op::Unsqueeze { axes: vec![2] },
            inputs: vec![node.inputs[0].clone()],
            outputs: vec![x2.clone()],
        });
        op2.inputs[0] = x2;
        let y2 = self.unique_name(&format!("{}/y_2d", node.name));
        op2.outputs = vec![y2.clone()];
        out.push(op2);
        out.push(Node {
            name: format!("{}/squeeze", node.name),
            op: Op::Squeeze { axes: vec![2] },
            inputs: vec![y2],
            outputs: vec![node.outputs[0].clone()],
        });
        Some(out)
    }

    /// A Resize whose scales or sizes name some axes (opset 18's `axes`) or keep the aspect
    /// ratio (`not_larger`, `not_smaller`: one scale for the listed axes, the smallest or the
    /// largest of sizes / input, and the output rounded) as one with full-rank scales (the
    /// coordinates the kernel maps) and sizes (the output): new constants.
    pub(crate) fn resize_full_rank(&mut self, node: &mut Node) -> std::result::Result<(), String> {
        let Op::Resize {
            axes,
            keep_aspect,
            coordinate_transformation,
            ..
        } = &mut node.op
        else {
            return Ok(());
        };
        let crop = coordinate_transformation == "tf_crop_and_resize";
        let x = self
            .shapes
            .get(&node.inputs[0])
            .cloned()
            .ok_or("input shape unknown")?;
        let rank = x.len();
        let ax: Vec<usize> = if axes.is_empty() {
            (0..rank).collect()
        } else {
            axes.iter()
                .map(|&a| norm_axis(a, rank).ok_or(format!("axis {a} out of range")))
                .collect::<std::result::Result<_, _>>()?
        };
        let given = |i: usize| node.inputs.get(i).filter(|v| !v.is_empty()).cloned();
        // The region of interest, full rank: [starts.., ends..], the whole of unlisted dims.
        let mut roi: Vec<f32> = [vec![0.0; rank], vec![1.0; rank]].concat();
        if let Some(name) = given(1).filter(|_| crop) {
            let v: Vec<f32> = self
                .consts
                .get(&name)
                .map(|c| c.to_f32().iter().copied().collect())
                .ok_or("roi must be constant")?;
            if v.len() != 2 * ax.len() {
                return Err(format!("roi {v:?} for axes {ax:?}"));
            }
            for (k, &a) in ax.iter().enumerate() {
                roi[a] = v[k];
                roi[rank + a] = v[ax.len() + k];
            }
        }
        let mut scales = vec![1.0f32; rank];
        let mut sizes = x.clone();
        if let Some(sz) = given(3) {
            let v = const_ints(&self.consts, &sz)?;
            if v.len() != ax.len() {
                return Err(format!("sizes {v:?} for axes {ax:?}"));
            }
            let ratios: Vec<f32> = ax
                .iter()
                .zip(&v)
                .map(|(&a, &s)| s as f32 / x[a] as f32)
                .collect();
            let common = match keep_aspect.as_str() {
                "not_larger" => Some(ratios.iter().copied().fold(f32::INFINITY, f32::min)),
                "not_smaller" => Some(ratios.iter().copied().fold(0.0, f32::max)),
                _ => None,
            };
            for (k, &a) in ax.iter().enumerate() {
                let s = common.unwrap_or(ratios[k]);
                scales[a] = s;
                sizes[a] = match common {
                    Some(c) => (x[a] as f32 * c).round() as usize,
                    None => v[k].max(0) as usize,
                };
            }
        } else if let Some(sc) = given(2) {
            let v: Vec<f32> = self
                .consts
                .get(&sc)
                .map(|c| c.to_f32().iter().copied().collect())
                .ok_or("scales must be constant")?;
            if v.len() != ax.len() {
                return Err(format!("scales {v:?} for axes {ax:?}"));
            }
            for (k, &a) in ax.iter().enumerate() {
                scales[a] = v[k];
                let extent = if crop { roi[rank + a] - roi[a] } else { 1.0 };
                sizes[a] = (x[a] as f32 * extent * v[k]).floor() as usize;
            }
        } else {
            return Err("Resize needs scales or sizes".into());
        }
        let sc_name = self.unique_name(&format!("{}/scales", node.name));
        let sz_name = self.unique_name(&format!("{}/sizes", node.name));
        self.consts.insert(
            sc_name.clone(),
            Const::F32(
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[rank]), scales).expect("1-D"),
            ),
        );
        self.consts.insert(
            sz_name.clone(),
            Const::I64(
                ndarray::ArrayD::from_shape_vec(
                    ndarray::IxDyn(&[rank]),
                    sizes.iter().map(|&s| s as i64).collect(),
                )
                .expect("1-D"),
            ),
        );
        let roi_name = match crop {
            true => {
                let name = self.unique_name(&format!("{}/roi", node.name));
                let roi = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2 * rank]), roi);
                self.consts
                    .insert(name.clone(), Const::F32(roi.expect("1-D")));
                name
            }
            false => String::new(),
        };
        node.inputs = vec![node.inputs[0].clone(), roi_name, sc_name, sz_name];
        *axes = Vec::new();
        *keep_aspect = "stretch".into();
        Ok(())
    }

    /// A Pad with an axes input as one with pads for every dim (a new constant).
    pub(crate) fn pads_on_axes(&mut self, node: &mut Node) -> std::result::Result<(), String> {
        let rank = self
            .shapes
            .get(&node.inputs[0])
            .map(Vec::len)
            .or_else(|| self.consts.get(&node.inputs[0]).map(|c| c.shape().len()))
            .ok_or("input shape unknown")?;
        let axes = const_ints(&self.consts, &node.inputs[3])?;
        let pads = const_ints(&self.consts, &node.inputs[1])?;
        if pads.len() != 2 * axes.len() {
            return Err(format!("pads {pads:?} for axes {axes:?}"));
        }
        let mut full = vec![0i64; 2 * rank];
        for (k, &a) in axes.iter().enumerate() {
            let d = norm_axis(a, rank).ok_or(format!("axis {a} out of range"))?;
            full[d] = pads[k];
            full[d + rank] = pads[k + axes.len()];
        }
        let name = self.unique_name(&format!("{}/pads", node.name));
        self.consts.insert(
            name.clone(),
            Const::I64(
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2 * rank]), full).expect("1-D"),
            ),
        );
        node.inputs[1] = name;
        node.inputs.truncate(3);
        Ok(())
    }
}
