//! Static checks `gatehouse check` runs on a script's source, for mistakes Rhai only finds when
//! the line runs: calls to functions that exist neither in the script nor in the host API, and
//! page names `getPageForStep` returns as literals (the caller checks those have a template).

use std::collections::HashSet;

use rhai::Engine;

/// A place in the source: line and column, from 1.
pub type Place = (usize, usize);

/// Built-in functions that are keywords of Rhai rather than registered functions.
const KEYWORD_FUNCTIONS: [&str; 10] = [
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_def_var",
    "is_def_fn",
    "is_shared",
    "eval",
];

/// Words followed by `(` that are not calls.
const KEYWORDS: [&str; 12] = [
    "if", "while", "for", "loop", "switch", "return", "throw", "fn", "catch", "in", "let", "const",
];

/// Every function name the engine knows: host modules (`users::get`), built-in packages.
pub fn known_functions(engine: &Engine) -> HashSet<String> {
    let mut known: HashSet<String> = engine
        .gen_fn_signatures(true)
        .into_iter()
        .filter_map(|signature| signature.split('(').next().map(|n| n.trim().to_owned()))
        .collect();
    known.extend(KEYWORD_FUNCTIONS.iter().map(|k| (*k).to_owned()));
    known
}

/// The code of a script with comments and string contents blanked out (same length, same lines),
/// and the string literals with their places.
fn split_code_and_strings(source: &str) -> (Vec<char>, Vec<(Place, String)>) {
    let chars: Vec<char> = source.chars().collect();
    let mut code = chars.clone();
    let mut strings = Vec::new();
    let (mut line, mut column) = (1, 1);
    let mut i = 0;
    let advance = |c: char, line: &mut usize, column: &mut usize| {
        if c == '\n' {
            *line += 1;
            *column = 1;
        } else {
            *column += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                code[i] = ' ';
                advance(chars[i], &mut line, &mut column);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] != '\n' {
                    code[i] = ' ';
                }
                advance(chars[i], &mut line, &mut column);
                i += 1;
            }
            for _ in 0..2 {
                if i < chars.len() {
                    code[i] = ' ';
                    advance(chars[i], &mut line, &mut column);
                    i += 1;
                }
            }
        } else if matches!(c, '"' | '`' | '\'') {
            let place = (line, column);
            let mut text = String::new();
            code[i] = ' ';
            advance(c, &mut line, &mut column);
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    code[i] = ' ';
                    advance(chars[i], &mut line, &mut column);
                    i += 1;
                }
                text.push(chars[i]);
                if chars[i] != '\n' {
                    code[i] = ' ';
                }
                advance(chars[i], &mut line, &mut column);
                i += 1;
            }
            if i < chars.len() {
                code[i] = ' ';
                advance(chars[i], &mut line, &mut column);
                i += 1;
            }
            if c == '"' {
                strings.push((place, text));
            }
        } else {
            advance(c, &mut line, &mut column);
            i += 1;
        }
    }
    (code, strings)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Calls (`name(` or `ns::name(`, not methods, not definitions) to functions in neither
/// `script_functions` nor `known`.
pub fn unknown_calls(
    source: &str,
    script_functions: &HashSet<String>,
    known: &HashSet<String>,
) -> Vec<(Place, String)> {
    let (code, _) = split_code_and_strings(source);
    let mut found = Vec::new();
    let (mut line, mut column) = (1, 1);
    let mut previous_word = String::new();
    let mut previous_char = ' ';
    let mut i = 0;
    while i < code.len() {
        let c = code[i];
        if is_ident_start(c) && (i == 0 || !is_ident(code[i - 1])) {
            let start = (line, column);
            let mut name = String::new();
            while i < code.len() {
                if is_ident(code[i]) {
                    name.push(code[i]);
                } else if code[i] == ':' && code.get(i + 1) == Some(&':') {
                    name.push_str("::");
                    i += 1;
                    column += 1;
                } else {
                    break;
                }
                i += 1;
                column += 1;
            }
            let mut j = i;
            while j < code.len() && code[j] == ' ' {
                j += 1;
            }
            let is_call = code.get(j) == Some(&'(')
                && previous_char != '.'
                && previous_word != "fn"
                && !KEYWORDS.contains(&name.as_str());
            if is_call && !script_functions.contains(&name) && !known.contains(&name) {
                found.push((start, name.clone()));
            }
            previous_word = name;
            previous_char = 'a';
            continue;
        }
        if !c.is_whitespace() {
            previous_char = c;
            previous_word.clear();
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
        i += 1;
    }
    found
}

/// The string literals inside `fn getPageForStep`'s body that look like page names.
pub fn page_literals(source: &str) -> Vec<(Place, String)> {
    let (code, strings) = split_code_and_strings(source);
    let text: String = code.iter().collect();
    let Some(start) = text.find("fn getPageForStep") else {
        return Vec::new();
    };
    let Some(open) = text[start..].find('{').map(|o| start + o) else {
        return Vec::new();
    };
    let mut depth = 0;
    let mut end = text.len();
    for (offset, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = open + offset;
                    break;
                }
            }
            _ => {}
        }
    }
    let line_of = |byte: usize| text[..byte].matches('\n').count() + 1;
    let (first, last) = (line_of(open), line_of(end));
    // Where each literal stands in the blanked code, to see what surrounds it: a page name is
    // a value the body returns (`{ "otp_sms" }`, `=> "mobile",`, `return "x";`), not an
    // argument or an operand (`identity::get("capture") == "yes"`).
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            code.iter()
                .enumerate()
                .filter(|(_, c)| **c == '\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let is_returned = |(line, column): Place, value: &str| {
        let at = line_starts[line - 1] + column - 1;
        let before = code[..at].iter().rev().find(|c| !c.is_whitespace());
        let after = code[(at + value.chars().count() + 2).min(code.len())..]
            .iter()
            .find(|c| !c.is_whitespace());
        let before_word: String = code[..at]
            .iter()
            .rev()
            .skip_while(|c| c.is_whitespace())
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let opens = matches!(before, Some('{') | Some('>'))
            || before_word == "return"
            || before_word == "else";
        opens && matches!(after, Some('}') | Some(';') | Some(','))
    };
    strings
        .into_iter()
        .filter(|(place, value)| {
            (first..=last).contains(&place.0)
                && !value.is_empty()
                && value.chars().all(|c| is_ident(c) || c == '-')
                && is_returned(*place, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_calls_that_resolve_nowhere() {
        let source = "// users::commented(1)\nfn helper(x) { x }\nfn authenticate(config, params, step) {\n    let s = \"users::in_string(1)\";\n    users::nope(params.username);\n    helper(1) + unknown_fn(2);\n    params.username.len();\n    if (true) { print(`x`) }\n}\n";
        let script: HashSet<String> = ["helper", "authenticate"].map(String::from).into();
        let known: HashSet<String> = ["print", "users::get"].map(String::from).into();
        let found = unknown_calls(source, &script, &known);
        assert_eq!(
            found,
            [
                ((5, 5), "users::nope".to_owned()),
                ((6, 17), "unknown_fn".to_owned())
            ]
        );
    }

    #[test]
    fn finds_page_literals_of_get_page_for_step() {
        let source = "fn other() { \"not_a_page\" }\nfn getPageForStep(config, step) {\n    if step == 1 { \"\" } else { \"otp_sms\" } // \"comment\"\n    if identity::get(\"capture\") == \"yes\" { return \"mobile\"; }\n}\n";
        assert_eq!(
            page_literals(source),
            [
                ((3, 32), "otp_sms".to_owned()),
                ((4, 51), "mobile".to_owned())
            ]
        );
    }
}
