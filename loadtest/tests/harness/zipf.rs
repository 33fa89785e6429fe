//! The Zipf sampler: rank 1 is the most frequent, frequencies fall as 1/k^s, s = 0 is uniform.

use loadtest::run::tokens::Zipf;

const DRAWS: usize = 200_000;

fn histogram(z: &Zipf) -> Vec<usize> {
    let mut rng = rand::rng();
    let mut counts = vec![0; z.len()];
    for _ in 0..DRAWS {
        counts[z.sample(&mut rng)] += 1;
    }
    counts
}

#[test]
fn rank_one_is_the_most_frequent_and_frequencies_follow_the_law() {
    let z = Zipf::new(1000, 1.0).unwrap();
    let counts = histogram(&z);
    let top = counts[0];
    assert!(counts.iter().all(|c| *c <= top));
    assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
    // Weight ratio 1 : 1/2 for s = 1.
    let ratio = counts[0] as f64 / counts[1] as f64;
    assert!((1.8..2.2).contains(&ratio), "rank1/rank2 = {ratio}");
    // H(1000) ≈ 7.485, so rank 1 gets about 13.4 % of the draws.
    let share = top as f64 / DRAWS as f64;
    assert!((0.125..0.142).contains(&share), "rank 1 share {share}");
}

#[test]
fn s_zero_is_uniform() {
    let z = Zipf::new(10, 0.0).unwrap();
    for (rank, count) in histogram(&z).iter().enumerate() {
        let share = *count as f64 / DRAWS as f64;
        assert!((0.09..0.11).contains(&share), "rank {rank}: {share}");
    }
}

#[test]
fn refuses_empty_ranges_and_bad_exponents() {
    assert!(Zipf::new(0, 1.0).is_err());
    assert!(Zipf::new(10, -0.5).is_err());
    assert!(Zipf::new(10, f64::NAN).is_err());
    let one = Zipf::new(1, 3.0).unwrap();
    assert!(histogram(&one).iter().all(|c| *c == DRAWS));
}
