//! `hyperllama`: the one binary. Parses the command line, sets up logging, and hands each
//! subcommand its resolved options. This is the composition root: the only place that names
//! concrete engines.

mod args;
mod client;
mod commands;
mod config;
mod engines;
mod local;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "hyperllama", version, about = "Serve open-weight language models on a laptop, a GPU box or a fleet.")]
struct Cli {
    /// Log lines as text or as JSON objects (one per line); RUST_LOG picks what is logged.
    #[arg(long, global = true, env = "HYPERLLAMA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Show this machine's hardware, the engines in this build, and which one a model would use.
    Info(commands::info::InfoArgs),
    /// Generate text from a model in-process, streaming tokens to stdout.
    Generate(commands::generate::GenerateArgs),
    /// Print a model's tokens for a text (in-process), or just their number with --count.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Render a chat template (a model's or a .jinja file) for messages, as the server does.
    Template(commands::template::TemplateArgs),
    /// Measure load time, time to first token, prompt and decode speed of a model in-process.
    Bench(commands::bench::BenchArgs),
    /// Start the server: Ollama-compatible /api and OpenAI-compatible /v1 on 127.0.0.1:11434.
    Serve(commands::serve::ServeArgs),
    /// Chat with a model through the server (a prompt for one answer, none for interactive).
    Run(commands::run::RunArgs),
    /// Create a model from a Modelfile or a GGUF file.
    Create(commands::models::CreateArgs),
    /// List the models in the store.
    #[command(alias = "ls")]
    List(commands::models::HostArg),
    /// List the loaded models.
    Ps(commands::models::HostArg),
    /// Check that the server is up (exit status 0), e.g. as a container health check.
    Health(commands::models::HostArg),
    /// Show a model's details, Modelfile, template or parameters.
    Show(commands::models::ShowArgs),
    /// Remove models.
    Rm(commands::models::NamesArgs),
    /// Copy a model under another name (no data is copied).
    Cp(commands::models::CopyArgs),
    /// Unload models now.
    Stop(commands::models::NamesArgs),
    /// Pull models from the Hugging Face hub (owner/repo[:QUANT]); a local model answers at once.
    Pull(commands::models::NamesArgs),
    /// Print the OpenAPI document of the server's API (what `GET /openapi.json` serves).
    Openapi,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `hyperllama man > hyperllama.1`.
    Man,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Info(a) => runtime().and_then(|rt| rt.block_on(commands::info::run(a))),
        Command::Generate(a) => runtime().and_then(|rt| rt.block_on(commands::generate::run(a))),
        Command::Bench(a) => runtime().and_then(|rt| rt.block_on(commands::bench::run(a))),
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&hyperllama_server::openapi::document()).unwrap_or_default());
            Ok(())
        }
        Command::Tokenize(a) => runtime().and_then(|rt| rt.block_on(commands::tokenize::run(a))),
        Command::Template(a) => runtime().and_then(|rt| rt.block_on(commands::template::run(a))),
        Command::Serve(a) => {
            let sub = matches.subcommand_matches("serve").cloned().unwrap_or_default();
            runtime().and_then(|rt| rt.block_on(commands::serve::run(a, &sub)))
        }
        Command::Run(a) => runtime().and_then(|rt| rt.block_on(commands::run::run(a))),
        Command::Create(a) => runtime().and_then(|rt| rt.block_on(commands::models::create(a))),
        Command::List(a) => runtime().and_then(|rt| rt.block_on(commands::models::list(a))),
        Command::Ps(a) => runtime().and_then(|rt| rt.block_on(commands::models::ps(a))),
        Command::Health(a) => runtime().and_then(|rt| rt.block_on(commands::models::health(a))),
        Command::Show(a) => runtime().and_then(|rt| rt.block_on(commands::models::show(a))),
        Command::Rm(a) => runtime().and_then(|rt| rt.block_on(commands::models::rm(a))),
        Command::Cp(a) => runtime().and_then(|rt| rt.block_on(commands::models::cp(a))),
        Command::Stop(a) => runtime().and_then(|rt| rt.block_on(commands::models::stop(a))),
        Command::Pull(a) => runtime().and_then(|rt| rt.block_on(commands::models::pull(a))),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hyperllama", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// `hyperllama generate ... | head` is not an error (ripgrep's rule).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // llama.cpp's own log is chatty; RUST_LOG=llama_cpp_2=info shows it.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,llama_cpp_2=error"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
