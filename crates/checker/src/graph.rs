//! The dependency graph between transactions: compact adjacency, Tarjan SCCs, and the
//! search for a concrete, weakest cycle inside a strongly connected component.

use std::collections::VecDeque;

use crate::history::Key;

/// Write-write dependency (version order).
pub(crate) const WW: u8 = 1;
/// Write-read dependency.
pub(crate) const WR: u8 = 2;
/// Read-write anti-dependency.
pub(crate) const RW: u8 = 4;
/// Real-time order: completed before invoked.
pub(crate) const RT: u8 = 8;
/// Write-write whose version order was inferred from real time.
pub(crate) const WW_RT: u8 = 16;
/// Read-write whose version order was inferred from real time.
pub(crate) const RW_RT: u8 = 32;

/// Label preference when one pair of transactions has several edges: the weakest first.
const PREFERENCE: [u8; 6] = [WW, WR, RT, WW_RT, RW, RW_RT];

/// One edge as collected, before building the adjacency.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawEdge {
    pub from: u32,
    pub to: u32,
    pub bit: u8,
    /// The key that justifies it (0 for real-time edges).
    pub key: Key,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Adj {
    pub to: u32,
    pub bit: u8,
    pub key: Key,
}

/// A labelled edge of a found cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CycleEdge {
    pub from: u32,
    pub to: u32,
    pub bit: u8,
    pub key: Key,
}

/// Compressed adjacency lists; one entry per (from, to, label) with one justifying key.
pub(crate) struct Graph {
    offsets: Vec<usize>,
    adj: Vec<Adj>,
}

impl Graph {
    pub fn build(nodes: usize, mut edges: Vec<RawEdge>) -> Graph {
        edges.sort_unstable_by_key(|e| (e.from, e.to, e.bit));
        edges.dedup_by_key(|e| (e.from, e.to, e.bit));
        let mut offsets = vec![0usize; nodes + 1];
        for e in &edges {
            offsets[e.from as usize + 1] += 1;
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        let adj = edges
            .iter()
            .map(|e| Adj {
                to: e.to,
                bit: e.bit,
                key: e.key,
            })
            .collect();
        Graph { offsets, adj }
    }

    pub fn nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn edge_count(&self) -> usize {
        self.adj.len()
    }

    pub fn out(&self, v: u32) -> &[Adj] {
        &self.adj[self.offsets[v as usize]..self.offsets[v as usize + 1]]
    }

    /// Strongly connected components with more than one node, and each node's component
    /// id (`u32::MAX` for nodes in trivial components). Iterative Tarjan.
    pub fn sccs(&self) -> (Vec<Vec<u32>>, Vec<u32>) {
        let n = self.nodes();
        const UNSEEN: u32 = u32::MAX;
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<u32> = Vec::new();
        let mut call: Vec<(u32, usize)> = Vec::new();
        let mut comp = vec![u32::MAX; n];
        let mut out = Vec::new();
        let mut counter = 0u32;
        for s in 0..n as u32 {
            if index[s as usize] != UNSEEN || self.out(s).is_empty() {
                continue;
            }
            index[s as usize] = counter;
            low[s as usize] = counter;
            counter += 1;
            stack.push(s);
            on_stack[s as usize] = true;
            call.push((s, 0));
            while let Some(&mut (v, ref mut pos)) = call.last_mut() {
                let edges = self.out(v);
                if *pos < edges.len() {
                    let w = edges[*pos].to;
                    *pos += 1;
                    if index[w as usize] == UNSEEN {
                        index[w as usize] = counter;
                        low[w as usize] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w as usize] = true;
                        call.push((w, 0));
                    } else if on_stack[w as usize] {
                        low[v as usize] = low[v as usize].min(index[w as usize]);
                    }
                } else {
                    call.pop();
                    if let Some(&(p, _)) = call.last() {
                        low[p as usize] = low[p as usize].min(low[v as usize]);
                    }
                    if low[v as usize] == index[v as usize] {
                        let mut members = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack[w as usize] = false;
                            members.push(w);
                            if w == v {
                                break;
                            }
                        }
                        if members.len() > 1 {
                            let id = out.len() as u32;
                            for &w in &members {
                                comp[w as usize] = id;
                            }
                            members.sort_unstable();
                            out.push(members);
                        }
                    }
                }
            }
        }
        (out, comp)
    }
}

/// Scratch space for cycle searches inside components, reused across calls.
pub(crate) struct Searcher<'g> {
    g: &'g Graph,
    comp: &'g [u32],
    color: Vec<u8>,
    stamp: Vec<u32>,
    parent: Vec<u32>,
    generation: u32,
    /// Remaining edge visits for the single-rw searches of the whole check.
    pub budget: u64,
}

impl<'g> Searcher<'g> {
    pub fn new(g: &'g Graph, comp: &'g [u32], budget: u64) -> Self {
        let n = g.nodes();
        Searcher {
            g,
            comp,
            color: vec![0; n],
            stamp: vec![0; n],
            parent: vec![0; n],
            generation: 0,
            budget,
        }
    }

    fn label(&self, from: u32, to: u32, mask: u8) -> CycleEdge {
        let edges = self.g.out(from);
        for bit in PREFERENCE {
            if bit & mask == 0 {
                continue;
            }
            if let Some(e) = edges.iter().find(|e| e.to == to && e.bit == bit) {
                return CycleEdge {
                    from,
                    to,
                    bit,
                    key: e.key,
                };
            }
        }
        unreachable!("a cycle edge exists with a label in the mask")
    }

    /// Any cycle inside component `c` using only edges whose label is in `mask`.
    pub fn find_cycle(&mut self, nodes: &[u32], c: u32, mask: u8) -> Option<Vec<CycleEdge>> {
        let mut found = None;
        let mut stack: Vec<(u32, usize)> = Vec::new();
        'outer: for &s in nodes {
            if self.color[s as usize] != 0 {
                continue;
            }
            self.color[s as usize] = 1;
            stack.push((s, 0));
            while let Some(&mut (v, ref mut pos)) = stack.last_mut() {
                let edges = self.g.out(v);
                let mut next = None;
                while *pos < edges.len() {
                    let e = edges[*pos];
                    *pos += 1;
                    if e.bit & mask != 0 && self.comp[e.to as usize] == c {
                        next = Some(e.to);
                        break;
                    }
                }
                match next {
                    Some(w) if self.color[w as usize] == 1 => {
                        let start = stack.iter().position(|&(x, _)| x == w).unwrap_or(0);
                        let path: Vec<u32> = stack[start..].iter().map(|&(x, _)| x).collect();
                        found = Some(self.close(&path, mask));
                        break 'outer;
                    }
                    Some(w) if self.color[w as usize] == 0 => {
                        self.color[w as usize] = 1;
                        stack.push((w, 0));
                    }
                    Some(_) => {}
                    None => {
                        self.color[v as usize] = 2;
                        stack.pop();
                    }
                }
            }
        }
        for &s in nodes {
            self.color[s as usize] = 0;
        }
        found
    }

    /// Labels the cycle `path[0] -> path[1] -> ... -> path[last] -> path[0]`.
    fn close(&self, path: &[u32], mask: u8) -> Vec<CycleEdge> {
        (0..path.len())
            .map(|i| self.label(path[i], path[(i + 1) % path.len()], mask))
            .collect()
    }

    /// A cycle inside component `c` made of exactly one edge labelled in `rw_mask` and
    /// otherwise edges labelled in `base_mask`: for each such edge a -> b, a breadth-first
    /// search from b back to a. Bounded by `budget`.
    pub fn find_single(
        &mut self,
        nodes: &[u32],
        c: u32,
        base_mask: u8,
        rw_mask: u8,
    ) -> Option<Vec<CycleEdge>> {
        let mut queue = VecDeque::new();
        for &a in nodes {
            for e in self.g.out(a) {
                if e.bit & rw_mask == 0 || self.comp[e.to as usize] != c {
                    continue;
                }
                if self.budget == 0 {
                    return None;
                }
                let b = e.to;
                self.generation += 1;
                let generation = self.generation;
                self.stamp[b as usize] = generation;
                queue.clear();
                queue.push_back(b);
                let mut reached = false;
                while let Some(v) = queue.pop_front() {
                    if self.budget == 0 {
                        break;
                    }
                    if v == a {
                        reached = true;
                        break;
                    }
                    for f in self.g.out(v) {
                        self.budget = self.budget.saturating_sub(1);
                        let w = f.to;
                        if f.bit & base_mask != 0
                            && self.comp[w as usize] == c
                            && self.stamp[w as usize] != generation
                        {
                            self.stamp[w as usize] = generation;
                            self.parent[w as usize] = v;
                            queue.push_back(w);
                        }
                    }
                }
                if reached {
                    let mut path = vec![a];
                    let mut v = a;
                    while v != b {
                        v = self.parent[v as usize];
                        path.push(v);
                    }
                    path.reverse(); // b ... a
                    let mut cycle: Vec<CycleEdge> = path
                        .windows(2)
                        .map(|w| self.label(w[0], w[1], base_mask))
                        .collect();
                    cycle.push(self.label(a, b, rw_mask));
                    return Some(cycle);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(from: u32, to: u32, bit: u8) -> RawEdge {
        RawEdge {
            from,
            to,
            bit,
            key: 0,
        }
    }

    #[test]
    fn sccs_and_weakest_cycle() {
        // 0 -ww-> 1 -ww-> 2 -rw-> 0, and 3 -> 4 (no cycle).
        let g = Graph::build(5, vec![e(0, 1, WW), e(1, 2, WW), e(2, 0, RW), e(3, 4, WW)]);
        let (sccs, comp) = g.sccs();
        assert_eq!(sccs, vec![vec![0, 1, 2]]);
        assert_eq!(comp[3], u32::MAX);
        let mut s = Searcher::new(&g, &comp, 1000);
        assert!(s.find_cycle(&sccs[0], 0, WW).is_none());
        let single = s
            .find_single(&sccs[0], 0, WW | WR, RW)
            .expect("single rw cycle");
        assert_eq!(single.len(), 3);
        assert_eq!(single.iter().filter(|c| c.bit == RW).count(), 1);
        let any = s.find_cycle(&sccs[0], 0, WW | RW).expect("cycle");
        assert_eq!(any.len(), 3);
    }
}
