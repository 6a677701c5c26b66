//! A node's score for one placement, and the best few kept for the
//! allocation's metrics (Nomad's `ScoreMetaData`): plain numbers on the
//! placement path, turned into named maps once per placement.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::structs::NodeScoreMeta;

/// The scorers, in the order of [`Score::parts`].
const SCORERS: [&str; 4] = ["binpack", "job-anti-affinity", "node-affinity", "allocation-spread"];

/// How many nodes' scores a metric keeps, as Nomad.
const TOP_NODES: usize = 5;

/// Each scorer's value for one node, and their mean.
#[derive(Debug, Clone, Copy)]
pub(super) struct Score {
    parts: [f64; 4],
    /// The mean of bin packing and of the other scorers that say something
    /// (non-zero), as Nomad normalizes.
    pub norm: f64,
}

impl Score {
    pub fn new(binpack: f64, anti_affinity: f64, affinity: f64, spread: f64) -> Score {
        let parts = [binpack, anti_affinity, affinity, spread];
        let counted = 1 + parts[1..].iter().filter(|v| **v != 0.0).count();
        Score { parts, norm: parts.iter().sum::<f64>() / counted as f64 }
    }
}

/// The best-scoring nodes of one placement, by position, highest first.
#[derive(Debug, Default)]
pub(super) struct TopNodes {
    best: Vec<(usize, Score)>,
}

impl TopNodes {
    /// Keeps node `i`'s score if it is among the best so far.
    pub fn offer(&mut self, i: usize, score: Score) {
        if self.best.len() >= TOP_NODES && self.best.last().is_some_and(|(_, worst)| worst.norm >= score.norm) {
            return;
        }
        let at = self.best.iter().position(|(_, s)| s.norm < score.norm).unwrap_or(self.best.len());
        self.best.insert(at, (i, score));
        self.best.truncate(TOP_NODES);
    }

    /// The position of the best node, if any was offered.
    pub fn best(&self) -> Option<usize> {
        self.best.first().map(|(i, _)| *i)
    }

    /// The kept scores with the nodes' IDs (`node_id` of a position).
    pub fn into_meta<'n>(self, node_id: impl Fn(usize) -> &'n str) -> Vec<NodeScoreMeta> {
        self.best
            .into_iter()
            .map(|(i, s)| NodeScoreMeta {
                node_id: node_id(i).to_string(),
                scores: SCORERS.iter().zip(s.parts).map(|(k, v)| (Cow::Borrowed(*k), v)).collect::<BTreeMap<_, _>>(),
                norm_score: s.norm,
            })
            .collect()
    }
}
