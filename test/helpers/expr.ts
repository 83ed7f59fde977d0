// A checker for fly-autoscaler's machine-count expressions (expr-lang syntax,
// github.com/expr-lang/expr), for test/unit/autoscaler.test.ts: it parses the real string from
// fly.autoscaler.toml and evaluates it for a value of the metric. It knows exactly what that
// expression uses (decimal numbers, the metric's name, parentheses, `/`, and the functions
// ceil, min and max) and refuses everything else with an ExprError naming the construct and its
// position. An expression the checker cannot read fails the test instead of being checked
// wrongly: extend this file, with expr-lang's meaning, before using anything new.

export class ExprError extends Error {
  override name = 'ExprError';
}

type Node =
  | { kind: 'number'; value: number }
  | { kind: 'variable' }
  | { kind: 'divide'; left: Node; right: Node }
  | { kind: 'call'; fn: FunctionName; args: Node[] };

/** expr-lang's builtins of these names: ceil(x) rounds up, min/max take two or more numbers. */
const FUNCTIONS = {
  ceil: { arity: [1, 1], apply: (a: number[]) => Math.ceil(a[0]!) },
  min: { arity: [2, Infinity], apply: (a: number[]) => Math.min(...a) },
  max: { arity: [2, Infinity], apply: (a: number[]) => Math.max(...a) },
} as const;
type FunctionName = keyof typeof FUNCTIONS;

type Token = { type: 'number' | 'name' | 'punct'; text: string; at: number };

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const rest = source.slice(i);
    const space = /^\s+/.exec(rest);
    if (space) {
      i += space[0].length;
      continue;
    }
    // Decimal integers and decimals only: expr-lang's hex, octal, exponents and `1_000` are not read here.
    const number = /^(\d+(\.\d+)?)(?![\w.])/.exec(rest);
    if (number) {
      tokens.push({ type: 'number', text: number[1]!, at: i });
      i += number[1]!.length;
      continue;
    }
    if (/^\d/.test(rest)) throw new ExprError(`unsupported number \`${/^[\w.]+/.exec(rest)![0]}\` at ${i}: the checker reads decimal numbers such as 16 or 0.5`);
    const name = /^[A-Za-z_$][\w$]*/.exec(rest);
    if (name) {
      tokens.push({ type: 'name', text: name[0], at: i });
      i += name[0].length;
      continue;
    }
    if ('()/,'.includes(rest[0]!)) {
      tokens.push({ type: 'punct', text: rest[0]!, at: i });
      i += 1;
      continue;
    }
    const unsupported = /^(\*\*|==|!=|<=|>=|&&|\|\||\?\?|\?\.|\.\.|[-+*%^<>!?:.[\]{}'"`#;=|&])/.exec(rest);
    throw new ExprError(`unsupported ${unsupported ? `operator or character \`${unsupported[0]}\`` : `character ${JSON.stringify(rest[0])}`} at ${i}: the checker reads numbers, the metric, parentheses, \`/\`, ceil, min and max`);
  }
  return tokens;
}

/** Parses `source`, in which `metric` is the only name besides the functions. */
export function parseExpr(source: string, metric: string): Node {
  const tokens = tokenize(source);
  let pos = 0;
  const peek = () => tokens[pos];
  const where = () => (peek() ? `at ${peek()!.at}` : 'at the end');
  const expect = (text: string) => {
    if (peek()?.text !== text) throw new ExprError(`expected \`${text}\` ${where()}${peek() ? `, found \`${peek()!.text}\`` : ''}`);
    pos++;
  };

  // expression := operand ('/' operand)*   (left-associative, as in expr-lang)
  function expression(): Node {
    let node = operand();
    while (peek()?.text === '/') {
      pos++;
      node = { kind: 'divide', left: node, right: operand() };
    }
    return node;
  }

  // operand := number | metric | function '(' expression (',' expression)* ')' | '(' expression ')'
  function operand(): Node {
    const token = peek();
    if (!token) throw new ExprError('unexpected end of the expression');
    pos++;
    if (token.type === 'number') return { kind: 'number', value: Number(token.text) };
    if (token.text === '(') {
      const inner = expression();
      expect(')');
      return inner;
    }
    if (token.type === 'name') {
      if (peek()?.text === '(') {
        if (!Object.hasOwn(FUNCTIONS, token.text)) throw new ExprError(`unsupported function \`${token.text}\` at ${token.at}: the checker knows ceil, min and max`);
        const fn = token.text as FunctionName;
        pos++;
        const args = [expression()];
        while (peek()?.text === ',') {
          pos++;
          args.push(expression());
        }
        expect(')');
        const [least, most] = FUNCTIONS[fn].arity;
        if (args.length < least || args.length > most) throw new ExprError(`${fn} takes ${least === most ? least : `at least ${least}`} argument(s), got ${args.length} at ${token.at}`);
        return { kind: 'call', fn, args };
      }
      if (token.text !== metric) throw new ExprError(`unknown name \`${token.text}\` at ${token.at}: the only variable is the metric \`${metric}\``);
      return { kind: 'variable' };
    }
    throw new ExprError(`unexpected \`${token.text}\` at ${token.at}`);
  }

  const tree = expression();
  if (pos < tokens.length) throw new ExprError(`unexpected \`${peek()!.text}\` ${where()}`);
  return tree;
}

/** The expression's value when the metric is `value`. */
export function evaluate(tree: Node, value: number): number {
  switch (tree.kind) {
    case 'number':
      return tree.value;
    case 'variable':
      return value;
    case 'divide':
      return evaluate(tree.left, value) / evaluate(tree.right, value);
    case 'call':
      return FUNCTIONS[tree.fn].apply(tree.args.map((a) => evaluate(a, value)));
  }
}

/** Parses once; the function evaluates the expression for a value of the metric. */
export function compileExpr(source: string, metric: string): (value: number) => number {
  const tree = parseExpr(source, metric);
  return (value) => evaluate(tree, value);
}
