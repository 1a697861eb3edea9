//! Which samples each step uses.
//!
//! The unlabeled set is shuffled once per epoch with a generator keyed on (seed, epoch); an
//! epoch is `floor(N_u / unlabeled_batch)` steps. The labeled set repeats to match (protocon.md
//! s.7): its stream is the concatenation of permutations keyed on (seed, round). Both are pure
//! functions of the step, so a resumed run draws exactly what an uninterrupted one would, and the
//! sampler needs no state in checkpoints.

use crate::batch::StepPlan;
use protocon::{Control, Source, StageError};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Domain separation between the generators drawn from one run seed.
const LABELED_STREAM: u64 = 0x6c61_6265_6c65_6400;
const UNLABELED_STREAM: u64 = 0x756e_6c61_6265_6c00;

fn permutation(indices: &[u32], seed: u64, stream: u64, round: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stream);
    rng.set_stream(round);
    let mut v = indices.to_vec();
    v.shuffle(&mut rng);
    v
}

/// The step plan for any step.
#[derive(Debug, Clone)]
pub struct StepSchedule {
    pub seed: u64,
    pub labeled: Vec<u32>,
    pub unlabeled: Vec<u32>,
    pub labeled_batch: usize,
    pub unlabeled_batch: usize,
}

impl StepSchedule {
    /// Steps per epoch: passes over the unlabeled set (or the labeled set when supervised).
    pub fn steps_per_epoch(&self) -> u64 {
        if self.unlabeled_batch > 0 && !self.unlabeled.is_empty() {
            (self.unlabeled.len() / self.unlabeled_batch).max(1) as u64
        } else {
            (self.labeled.len() / self.labeled_batch.max(1)).max(1) as u64
        }
    }

    pub fn plan(&self, step: u64) -> StepPlan {
        self.plan_cached(step, &mut None)
    }

    /// [`plan`](Self::plan), reusing the epoch's unlabeled permutation held in `cache` (a
    /// shuffle of the whole unlabeled set) instead of redrawing it at every step.
    pub fn plan_cached(&self, step: u64, cache: &mut Option<(u64, Vec<u32>)>) -> StepPlan {
        let epoch = step / self.steps_per_epoch();
        let within = step % self.steps_per_epoch();
        let unlabeled = if self.unlabeled_batch > 0 && !self.unlabeled.is_empty() {
            // A permutation of positions in the unlabeled list (the bank slots); shuffling
            // positions draws the same order as shuffling the indices themselves.
            if cache.as_ref().map(|c| c.0) != Some(epoch) {
                let positions: Vec<u32> = (0..self.unlabeled.len() as u32).collect();
                *cache = Some((epoch, permutation(&positions, self.seed, UNLABELED_STREAM, epoch)));
            }
            let perm = &cache.as_ref().expect("filled above").1;
            let start = within as usize * self.unlabeled_batch;
            perm[start..start + self.unlabeled_batch.min(perm.len())].to_vec()
        } else {
            Vec::new()
        };
        let unlabeled_slots = unlabeled;
        let unlabeled = unlabeled_slots.iter().map(|&p| self.unlabeled[p as usize]).collect();
        let n = self.labeled.len() as u64;
        let mut labeled = Vec::with_capacity(self.labeled_batch);
        let mut pos = step * self.labeled_batch as u64;
        let mut round_cache: Option<(u64, Vec<u32>)> = None;
        while labeled.len() < self.labeled_batch && n > 0 {
            let round = pos / n;
            if round_cache.as_ref().map(|c| c.0) != Some(round) {
                round_cache = Some((round, permutation(&self.labeled, self.seed, LABELED_STREAM, round)));
            }
            let perm = &round_cache.as_ref().expect("filled above").1;
            labeled.push(perm[(pos % n) as usize]);
            pos += 1;
        }
        StepPlan { step, epoch, labeled, unlabeled, unlabeled_slots }
    }
}

/// Source of step plans from `start` to `end` (exclusive). `stop` ends the stream early and
/// cleanly (Ctrl-C): the rest of the pipeline drains and the compute stage checkpoints.
pub struct StepSampler {
    schedule: Arc<StepSchedule>,
    epoch_permutation: Option<(u64, Vec<u32>)>,
    next: u64,
    end: u64,
    stop: Arc<AtomicBool>,
}

impl StepSampler {
    pub fn new(schedule: Arc<StepSchedule>, start: u64, end: u64, stop: Arc<AtomicBool>) -> Self {
        StepSampler { schedule, epoch_permutation: None, next: start, end, stop }
    }
}

impl Source for StepSampler {
    type Out = StepPlan;
    fn next(&mut self, _: &Control) -> Result<Option<StepPlan>, StageError> {
        if self.next >= self.end || self.stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let plan = self.schedule.plan_cached(self.next, &mut self.epoch_permutation);
        self.next += 1;
        Ok(Some(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> StepSchedule {
        StepSchedule { seed: 7, labeled: (0..10).collect(), unlabeled: (100..150).collect(), labeled_batch: 4, unlabeled_batch: 7 }
    }

    #[test]
    fn an_epoch_covers_the_unlabeled_set_without_repeats() {
        let s = schedule();
        assert_eq!(s.steps_per_epoch(), 7);
        let mut seen: Vec<u32> = (0..7).flat_map(|step| s.plan(step).unlabeled).collect();
        assert!(seen.iter().all(|i| (100..150).contains(i)));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 49, "7 x 7 distinct samples in one epoch");
        assert_eq!(s.plan(6).epoch, 0);
        assert_eq!(s.plan(7).epoch, 1);
        assert_ne!(s.plan(0).unlabeled, s.plan(7).unlabeled, "reshuffled each epoch");
        let p = s.plan(3);
        assert!(p.unlabeled_slots.iter().zip(&p.unlabeled).all(|(&slot, &i)| s.unlabeled[slot as usize] == i));
    }

    #[test]
    fn labeled_stream_repeats_whole_permutations() {
        let s = schedule();
        // Steps 0..5 draw 20 labeled samples: two full permutations of the 10.
        let drawn: Vec<u32> = (0..5).flat_map(|step| s.plan(step).labeled).collect();
        for round in drawn.chunks(10) {
            let mut r = round.to_vec();
            r.sort_unstable();
            assert_eq!(r, (0..10).collect::<Vec<u32>>());
        }
        assert_ne!(drawn[..10], drawn[10..]);
    }

    #[test]
    fn cached_plans_equal_fresh_ones() {
        let s = schedule();
        let mut cache = None;
        for step in (0..20).chain([3, 50, 2]) {
            assert_eq!(s.plan_cached(step, &mut cache), s.plan(step));
        }
    }

    #[test]
    fn plans_depend_only_on_seed_and_step() {
        let (a, b) = (schedule(), schedule());
        for step in [0, 3, 8, 100] {
            assert_eq!(a.plan(step), b.plan(step));
        }
        let c = StepSchedule { seed: 8, ..schedule() };
        assert_ne!(a.plan(0), c.plan(0));
    }
}
