// HTML to markdown for the local parser (and for DOCX, through mammoth's HTML). node-html-markdown
// walks the element tree recursively, so a document nested deeply enough overflows the stack;
// the depth is measured first, on the very tree it will walk, and refused past htmlMaxDepth.
import { createRequire } from 'node:module';
import { NodeHtmlMarkdown } from 'node-html-markdown';
import type { ParserLimits } from '../types.ts';
import { formatCount, limitExceeded, normaliseNewlines } from './shared.ts';

interface TreeNode {
  nodeType: number;
  childNodes: TreeNode[];
}

// node-html-markdown's own parse step (node-html-parser with its settings): the depth is the
// tree's, after that parser's repairs (void and self-closing tags, elements closed by an opening
// sibling, unclosed chains flattened), so sloppy real-world HTML is not refused for its markup.
const { parseHTML } = createRequire(import.meta.url)('node-html-markdown/dist/utilities.js') as {
  parseHTML(html: string, options: object): TreeNode;
};

const ELEMENT_NODE = 1;

export interface HtmlConverter {
  toMarkdown(html: string): string;
}

export function createHtmlConverter(limits: Pick<ParserLimits, 'htmlMaxDepth'>): HtmlConverter {
  const nhm = new NodeHtmlMarkdown(
    {
      maxConsecutiveNewlines: 2,
      // The library's default pattern lacks a group around its alternatives, so its "1. "
      // (ordered-list) escape fires mid-line and every "in 1822. The" becomes "1822\. The",
      // noise in every chunk and embedding. Same pattern, with the line anchor applied to both.
      lineStartEscape: [/^(\s*?)(?:((?:\+\s)|(?:[=>-])|(?:#{1,6}\s))|(\d+)(\.\s))/gm, '$1$3\\$2$4'],
    },
    undefined,
    undefined,
  );
  return {
    toMarkdown(html: string): string {
      const depth = elementDepth(parseHTML(html, {}), limits.htmlMaxDepth);
      if (depth > limits.htmlMaxDepth) {
        throw limitExceeded('HTML_MAX_DEPTH', `HTML elements are nested more than ${formatCount(limits.htmlMaxDepth)} deep`, `${formatCount(limits.htmlMaxDepth)} levels`);
      }
      return normaliseNewlines(nhm.translate(html)).trim();
    },
  };
}

/**
 * Deepest element nesting (<html><body><p> is 3), without recursion; stops counting once past
 * `stopAfter`, so the answer is exact up to it and "more" beyond.
 */
function elementDepth(root: TreeNode, stopAfter: number): number {
  let deepest = 0;
  const stack: Array<[TreeNode, number]> = [[root, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (depth > deepest) {
      deepest = depth;
      if (deepest > stopAfter) break;
    }
    for (const child of node.childNodes) if (child.nodeType === ELEMENT_NODE) stack.push([child, depth + 1]);
  }
  return deepest;
}
