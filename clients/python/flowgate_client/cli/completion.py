"""``flowgate completion bash``: a completion script generated from the argparse tree.

Install with ``flowgate completion bash > ~/.local/share/bash-completion/completions/flowgate``
(or ``eval "$(flowgate completion bash)"`` in ``~/.bashrc``).
"""

from __future__ import annotations

import argparse


def _children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def _walk(parser: argparse.ArgumentParser, path: str, table: dict[str, str]) -> None:
    children = _children(parser)
    table[path] = " ".join([*sorted(children), *_options(parser)])
    for name, child in children.items():
        _walk(child, f"{path} {name}".strip(), table)


def bash_completion(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    table: dict[str, str] = {}
    _walk(parser, "", table)
    cases = "\n".join(f'        "{path}") words="{words}" ;;' for path, words in sorted(table.items()))
    function = "_" + prog.replace("-", "_") + "_complete"
    return f"""# bash completion for {prog}
{function}() {{
    local cur path word words i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    path=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        [[ "$word" == -* ]] && continue
        case "$path${{path:+ }}$word" in
{chr(10).join(f'            "{p}") path="{p}" ;;' for p in sorted(table) if p)}
        esac
    done
    case "$path" in
{cases}
        *) words="" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F {function} {prog}
"""
