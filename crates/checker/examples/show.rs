use mako_checker::*;
fn main() {
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 10).read(1, &[]).append(1, 1).released();
    h.txn(1).at(2, 9).read(1, &[]).append(1, 2).released();
    h.txn(2).at(11, 12).read(1, &[1, 2]).released();
    h.txn(0).at(20, 21).append(5, 1).released();
    h.txn(1).at(22, 23).read(5, &[]).released();
    h.txn(2).at(24, 25).read(5, &[1]).released();
    h.txn(0).at(30, 40).write(7, 1).read(8, &[2]).released();
    h.txn(1).at(31, 39).write(8, 2).read(7, &[1]).released();
    println!("{}", check(&h.build()));
}
