//! Counter-based random streams: every random draw of a run is a pure function of the run's
//! seed and a position, so a resumed run needs no saved generator state.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Stream id of the fixed latent vectors of the sample grids.
const SAMPLE_STREAM: u64 = u64::MAX;

/// The generator of the latent vectors of `phase` in generator step `step` (phases
/// 0..n_dis are the discriminator steps, n_dis the generator step), for the global batch.
///
/// The key is the seed and the stream is (step, phase) packed, so streams never overlap.
pub fn step_rng(seed: u64, step: u64, phase: u32) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step.wrapping_mul(1 << 8) | u64::from(phase & 0xff));
    rng
}

/// The generator of the sample grid's fixed latent vectors.
pub fn sample_rng(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(SAMPLE_STREAM);
    rng
}
