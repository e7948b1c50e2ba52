mod common;

use candle_core::{DType, Device, Tensor};
use ssgan_model::rotation::{discriminator_batch, rotate, rotation_labels};

/// [n, c, s, s] with a distinct value at every position.
fn numbered(n: usize, c: usize, s: usize) -> Tensor {
    let values: Vec<f64> = (0..n * c * s * s).map(|i| i as f64).collect();
    Tensor::from_vec(values, (n, c, s, s), &Device::Cpu).unwrap()
}

fn pixel(
    data: &[f64],
    (c, s): (usize, usize),
    (img, ch, row, col): (usize, usize, usize, usize),
) -> f64 {
    data[((img * c + ch) * s + row) * s + col]
}

/// Source pixel of out[i, j] for each angle, written out independently of the library.
fn expected_source(turns: usize, s: usize, i: usize, j: usize) -> (usize, usize) {
    match turns {
        0 => (i, j),
        1 => (j, s - 1 - i),
        2 => (s - 1 - i, s - 1 - j),
        3 => (s - 1 - j, i),
        _ => unreachable!(),
    }
}

#[test]
fn rotate_matches_index_arithmetic_for_all_angles() {
    let (n, c, s) = (2, 3, 5);
    let x = numbered(n, c, s);
    let input = common::to_vec(&x);
    for turns in 0..4 {
        let output = common::to_vec(&rotate(&x, turns).unwrap());
        for img in 0..n {
            for ch in 0..c {
                for i in 0..s {
                    for j in 0..s {
                        let (si, sj) = expected_source(turns, s, i, j);
                        let got = pixel(&output, (c, s), (img, ch, i, j));
                        let want = pixel(&input, (c, s), (img, ch, si, sj));
                        assert_eq!(got, want, "turns {turns} img {img} ch {ch} at ({i}, {j})");
                    }
                }
            }
        }
    }
}

#[test]
fn rotate_90_is_counter_clockwise() {
    // [[1, 2], [3, 4]] rotated counter-clockwise is [[2, 4], [1, 3]] (NumPy rot90, k=1).
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
    assert_eq!(
        common::to_vec(&rotate(&x, 1).unwrap()),
        vec![2.0, 4.0, 1.0, 3.0]
    );
    assert_eq!(
        common::to_vec(&rotate(&x, 2).unwrap()),
        vec![4.0, 3.0, 2.0, 1.0]
    );
    assert_eq!(
        common::to_vec(&rotate(&x, 3).unwrap()),
        vec![3.0, 1.0, 4.0, 2.0]
    );
}

#[test]
fn four_quarter_turns_are_identity() {
    let x = numbered(1, 2, 6);
    let mut y = x.clone();
    for _ in 0..4 {
        y = rotate(&y, 1).unwrap();
    }
    assert_eq!(common::to_vec(&x), common::to_vec(&y));
}

#[test]
fn labels_are_grouped_by_angle() {
    let labels = rotation_labels(3, &Device::Cpu)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(labels, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
}

#[test]
fn discriminator_batch_layout() {
    let (b, n, s) = (4, 2, 3);
    let x = numbered(b, 1, s);
    let g = (numbered(b, 1, s) + 1000.0).unwrap();
    let (batch, real, fake) = discriminator_batch(&x, &g, n).unwrap();
    assert_eq!(batch.dims4().unwrap(), (2 * b + 6 * n, 1, s, s));
    assert_eq!(real.gan_rows(), (0, b));
    assert_eq!(real.rotation_rows(), (b - n, 4 * n));
    assert_eq!(fake.gan_rows(), (b + 3 * n, b));
    assert_eq!(fake.rotation_rows(), (2 * b + 3 * n - n, 4 * n));

    let row = |t: &Tensor, i: usize| common::to_vec(&t.narrow(0, i, 1).unwrap());
    let tail = x.narrow(0, b - n, n).unwrap();
    let g_tail = g.narrow(0, b - n, n).unwrap();
    for k in 0..b {
        assert_eq!(row(&batch, k), row(&x, k), "real row {k}");
        assert_eq!(row(&batch, b + 3 * n + k), row(&g, k), "fake row {k}");
    }
    for (angle, turns) in [1, 2, 3].into_iter().enumerate() {
        let rotated = rotate(&tail, turns).unwrap();
        let g_rotated = rotate(&g_tail, turns).unwrap();
        for k in 0..n {
            let real_row = b + angle * n + k;
            let fake_row = 2 * b + 3 * n + angle * n + k;
            assert_eq!(
                row(&batch, real_row),
                row(&rotated, k),
                "real rotated row {real_row}"
            );
            assert_eq!(
                row(&batch, fake_row),
                row(&g_rotated, k),
                "fake rotated row {fake_row}"
            );
        }
    }
    let _ = DType::F64;
}
