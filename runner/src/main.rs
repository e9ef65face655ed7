//! bootfarm-runner: boots one kernel under QEMU and reports a verdict.

fn main() {
    println!("bootfarm-runner: not yet implemented");
}
