/**
 * The calculator expression the hardening issue reproduced: within every documented limit, yet
 * it burned seconds of CPU. Fractions over one large denominator: the running sum stays within
 * the digit limit once reduced, but each `+`/`-` used to reduce a ~7,000-digit fraction with a
 * BigInt gcd first. Tests and the hardening benchmark send this same one.
 */
export function heavyExpression(): string {
  const numerators = [
    3,
    5,
    11,
    13,
    17,
    19,
    23,
    29,
    31,
    37,
    41,
    43,
    47,
    53,
    59,
    61,
    67,
    71,
    73,
  ];
  let text = "";
  for (let i = 0; text.length < 960; i++) {
    text += `${i === 0 ? "" : i % 2 ? "+" : "-"}${numerators[i % numerators.length]}^4000/7^4000`;
  }
  return text;
}
