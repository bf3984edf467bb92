//! The GEMM kernels and the one place that picks among them, with their tile and block shapes.

use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::Gpu;

/// Uniform, a, b, bias, c, then the epilogue's affine, residual and quantizer tables.
const BINDINGS: &[Access] = &[
    Access::Uniform,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
];
static TILED: Kernel = Kernel {
    family: Family::Gemm,
    entry: "matmul",
    bindings: BINDINGS,
};
static TILED_WIDE: Kernel = Kernel {
    family: Family::Gemm,
    entry: "matmul_wide",
    bindings: BINDINGS,
};
static BLOCKED: Kernel = Kernel {
    family: Family::Gemm,
    entry: "matmul_blocked",
    bindings: BINDINGS,
};
static SUBGROUP: Kernel = Kernel {
    family: Family::GemmSubgroup,
    entry: "matmul_subgroup",
    bindings: BINDINGS,
};
pub(super) static SUBGROUP_VEC4: Kernel = Kernel {
    family: Family::GemmSubgroup,
    entry: "matmul_subgroup_vec4",
    bindings: BINDINGS,
};

/// The GEMM kernels. All four add each output's products in k order with fma from zero, so
/// they give the same bits; they differ only in speed per adapter class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// Tiles of 16 to 64 rows and columns by shape, 16 deep, in workgroup memory: for GPUs.
    Tiled,
    /// The tiled kernel with tiles of 128 x 128, 8 deep (8 x 8 outputs per thread): for GPUs,
    /// on products with enough tiles to fill one.
    TiledWide,
    /// 8 x 8 outputs per invocation in registers, no workgroup memory or barrier: for CPU
    /// adapters (lavapipe, llvmpipe on GL, WARP, SwiftShader).
    Blocked,
    /// `Blocked` with the shared A operand loaded once per 8 lanes and handed out by subgroup
    /// broadcasts, and 8 to 32 rows per invocation by M: CPU adapters whose
    /// subgroups have at least 8 lanes (lavapipe on AVX2).
    Subgroup,
}

/// Tile rows and columns of [`GemmKernel::TiledWide`].
const WIDE: u64 = 128;
/// Tile depth of [`GemmKernel::TiledWide`]: 8 rows of 128 + 1 fit the workgroup arrays sized
/// for 16 rows of 64 + 1.
const WIDE_DEPTH: u64 = 8;
/// Tiles a product needs before GPUs take [`GemmKernel::TiledWide`]: two per multiprocessor of
/// a 128-SM GPU, so that the larger tiles still fill one. A guess until the device bench,
/// which times both tiled forms at every size, has run on GPUs.
const WIDE_TILES: u64 = 256;

/// Lanes that share one row block in the blocked kernels (`LANES` in gemm.wgsl).
const LANES: u64 = 8;
/// Output rows and columns per invocation of the blocked kernels (`BM`, `BN`).
const BLOCK: (u64, u64) = (8, 4);

impl GemmKernel {
    /// Every kernel `gpu` can run.
    pub fn available(gpu: &Gpu) -> Vec<GemmKernel> {
        let a = gpu.adapter();
        let mut all = vec![
            GemmKernel::Tiled,
            GemmKernel::TiledWide,
            GemmKernel::Blocked,
        ];
        if a.subgroups && a.subgroup_min >= LANES as u32 {
            all.push(GemmKernel::Subgroup);
        }
        all
    }

    /// The kernel for an `m x n` product on this adapter: the one place that decides.
    /// Software adapters take the register-blocked forms (the subgroup one where it can run),
    /// GPUs the tiled one, with 128 x 128 tiles where a product has at least `WIDE_TILES` of
    /// them; a product with more blocks than one dispatch allows falls back to the tiled
    /// kernel's larger tiles.
    pub fn pick(gpu: &Gpu, m: usize, n: usize) -> GemmKernel {
        let fits = |k: GemmKernel| k.fits(gpu, m, n);
        if !gpu.cpu_kernels() {
            return match prefers_wide(m, n, 1) && fits(GemmKernel::TiledWide) {
                true => GemmKernel::TiledWide,
                false => GemmKernel::Tiled,
            };
        }
        let available = GemmKernel::available(gpu);
        [GemmKernel::Subgroup, GemmKernel::Blocked]
            .into_iter()
            .find(|&k| available.contains(&k) && fits(k))
            .unwrap_or(GemmKernel::Tiled)
    }

    /// True when an `m x n` product's tiles fit one dispatch's grid.
    pub fn fits(self, gpu: &Gpu, m: usize, n: usize) -> bool {
        let max_groups = gpu.limits().max_groups as u64;
        self.grid(m as u64, n as u64, max_groups)
            .iter()
            .all(|&g| g <= max_groups)
    }

    pub(super) fn kernel(self) -> &'static Kernel {
        match self {
            GemmKernel::Tiled => &TILED,
            GemmKernel::TiledWide => &TILED_WIDE,
            GemmKernel::Blocked => &BLOCKED,
            GemmKernel::Subgroup => &SUBGROUP,
        }
    }

    /// The tiled forms' pipeline constants for an `m x n` product: block rows and columns per
    /// thread (`RM`, `RN`: a sixteenth of the tile's) and, for 128-wide tiles, their depth `TK`.
    pub(super) fn tile_constants(
        self,
        m: u64,
        n: u64,
        max_groups: u64,
    ) -> Vec<(&'static str, f64)> {
        match self {
            GemmKernel::Tiled => {
                let [tm, tn] = tiles(m, n, max_groups);
                vec![("RM", (tm / 16) as f64), ("RN", (tn / 16) as f64)]
            }
            GemmKernel::TiledWide => {
                let r = (WIDE / 16) as f64;
                vec![("RM", r), ("RN", r), ("TK", WIDE_DEPTH as f64)]
            }
            GemmKernel::Blocked | GemmKernel::Subgroup => Vec::new(),
        }
    }

    /// Workgroups along (columns, rows) for an `m x n` product.
    pub(super) fn grid(self, m: u64, n: u64, max_groups: u64) -> [u64; 2] {
        match self {
            GemmKernel::Tiled => {
                let [tm, tn] = tiles(m, n, max_groups);
                [n.div_ceil(tn), m.div_ceil(tm)]
            }
            GemmKernel::TiledWide => [n.div_ceil(WIDE), m.div_ceil(WIDE)],
            GemmKernel::Blocked => [n.div_ceil(LANES * 2 * BLOCK.1), m.div_ceil(BLOCK.0)],
            GemmKernel::Subgroup => [n.div_ceil(LANES * BLOCK.1), m.div_ceil(BLOCK.0)],
        }
    }
}

/// True when GPUs should take the 128 x 128 tiles for `items` products of `m x n` (one
/// dispatch's batch, e.g. a convolution's images): both sides at least one tile (a narrower
/// side would leave most of each tile empty), and at least [`WIDE_TILES`] tiles in all.
pub(crate) fn prefers_wide(m: usize, n: usize, items: usize) -> bool {
    let (m, n, items) = (m as u64, n as u64, items as u64);
    m >= WIDE && n >= WIDE && m.div_ceil(WIDE) * n.div_ceil(WIDE) * items >= WIDE_TILES
}

/// The tiled kernel's tile rows (or columns) for a dimension of `d`: 16, 32 or 64, the fewest
/// padded rows weighed by a row's cost, which falls with the tile because each value loaded
/// into workgroup memory feeds more FMAs (the weight 8 is a guess no GPU has tuned yet), among
/// the tiles that keep the grid within `max_groups`. MobileNetV2's 16-160 channels and its
/// 14 x 14 and 28 x 28 planes take 16 or 32; its 7 x 7 planes and large sizes keep 64.
fn tile_side(d: u64, max_groups: u64) -> u64 {
    [64u64, 32, 16]
        .into_iter()
        .filter(|&t| d.div_ceil(t) <= max_groups)
        .min_by_key(|&t| d.div_ceil(t) * (t + 8))
        .unwrap_or(64)
}

/// The tiled kernel's tile rows and columns for an `m x n` product ([`tile_side`] of each).
fn tiles(m: u64, n: u64, max_groups: u64) -> [u64; 2] {
    [tile_side(m, max_groups), tile_side(n, max_groups)]
}

/// Row blocks of 8 per invocation of the subgroup kernel for `m` rows (1 to 4):
/// the fewest padded rows weighed by the cost of a row, which falls with the block height
/// because each loaded B vector feeds more FMAs (the weight 11 fits lavapipe's speeds at
/// 8, 16, 24 and 32 rows). 24 rows give MobileNetV2's 24- and 144-channel layers no padding.
pub(super) fn row_blocks(m: u64) -> u64 {
    (1..=4u64)
        .min_by_key(|&b| {
            let rows = 8 * b;
            m.div_ceil(rows) * rows * (rows + 11) * 96 / rows
        })
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_tiles_only_where_they_fill_a_gpu() {
        assert!(prefers_wide(4096, 4096, 1));
        assert!(prefers_wide(2048, 2048, 1));
        assert!(!prefers_wide(1024, 1024, 1));
        // MobileNetV2's pointwise convs: few output channels, one tile row; a tall product
        // of 196 x 1 tiles.
        assert!(!prefers_wide(24, 3136, 1));
        assert!(!prefers_wide(25088, 24, 1));
        assert!(!prefers_wide(64, 1 << 20, 1), "half of each tile empty");
        // A convolution's images count: ResNet's 256-channel 3x3 convs at 28 x 28, batch 32.
        assert!(prefers_wide(256, 784, 32));
        assert!(!prefers_wide(128, 784, 1));
    }
}
