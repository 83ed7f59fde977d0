// Number formatting shared by the operators' reports (`docpipe status`, `docpipe usage`).

export const thousands = (n: number): string => n.toLocaleString('en-US');

/** 512 -> "512 B", 1536 -> "1.5 KiB", up to PiB. */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}
