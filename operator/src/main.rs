//! bootfarm-operator: the elastic boot farm.

fn main() {
    println!("bootfarm-operator: not yet implemented");
}
