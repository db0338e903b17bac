//! Runs the NLU benchmark (`nlu_bench [--data DIR] [--out FILE]`) or, with `eval` first,
//! the labelled-set evaluation (`nlu_bench eval --train FILE --test FILE`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if args.first().map(String::as_str) == Some("eval") {
        botd::engine::nlu::eval::cli_nlu_eval(&args[1..])
    } else {
        botd::engine::nlu::eval::cli_nlu_bench(&args)
    };
    std::process::exit(code);
}
