/**
 * Reduces every URL in `text` to its scheme and host (`http://user:pass@h:81/bot<token>/m?x=1` →
 * `http://h:81`): error texts copied from foreign libraries quote the URL they failed on, and its
 * userinfo, path (the bot token) and query may all be secrets. Used wherever an error becomes text
 * that leaves the process: logs, spans, `last_error`, `/health`.
 */
export const redactUrls = (text: string): string =>
  text.replace(URL_PATTERN, (match) => {
    // Punctuation that ends the sentence is prose, not part of the URL: keep it.
    const prose = /[.,;:!?]*$/.exec(match)?.[0] ?? ""
    return reduce(match.slice(0, match.length - prose.length)) + prose
  })

// A scheme, `://`, then everything up to whitespace, a quote or a bracket that ends a URL in prose
// (square brackets stay: an IPv6 host is written in them).
const URL_PATTERN = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>`(){}]*/gi

const reduce = (url: string): string => {
  const scheme = url.slice(0, url.indexOf("://"))
  const rest = url.slice(scheme.length + 3)
  // The authority ends at the first /, ? or #; its userinfo at the last @ in it.
  const authority = rest.split(/[/?#]/, 1)[0] ?? ""
  return `${scheme}://${authority.slice(authority.lastIndexOf("@") + 1)}`
}
