// Documents for the search tests: each on its own subject, in paragraphs long enough that with
// SEARCH_CHUNKING a document becomes several chunks, so that "the expected chunk first" means
// something. The local embedder compares vocabulary (src/providers/embedder/local.ts): a query
// made of a chunk's own text has that chunk's vector, and a sentence of one document shares its
// words with that document's chunks only.

/** Small chunks: a paragraph or two each. */
export const SEARCH_CHUNKING = { maxTokens: 64, overlapTokens: 8 } as const;

export const CORPUS = {
  lighthouses: [
    '# Lighthouses',
    'The keeper climbed the spiral staircase every evening to light the lamp. Paraffin burners gave way to electric bulbs, and a clockwork mechanism turned the great Fresnel lens so that the beam swept the reef once every ten seconds.',
    'Storms battered the tower on the headland. Waves broke over the gallery, salt crusted the lantern panes, and the keeper logged the wind force, the visibility and every passing steamer in a leather-bound journal.',
    'Automation ended the profession. Today a solar panel charges the batteries, a photocell switches the light at dusk, and engineers visit the rock by helicopter twice a year to service the optic and the fog signal.',
  ].join('\n\n'),
  beekeeping: [
    '# Beekeeping',
    'A colony overwinters as a tight cluster around the queen, shivering flight muscles to keep the centre warm. The beekeeper leaves enough capped honey in the brood box and fits a mouse guard across the entrance in autumn.',
    'Swarming is how colonies reproduce. When the hive grows crowded the workers raise new queen cells, and the old queen departs with half the bees to hang from a branch while scouts dance to choose a new cavity.',
    'Varroa mites weaken the larvae and spread viruses. Beekeepers count the mites that fall onto a sticky board, treat with oxalic acid when the colony is broodless, and select stock that grooms the parasites away.',
  ].join('\n\n'),
  volcanoes: [
    '# Volcanoes',
    'Basaltic magma is runny and gas escapes gently, so Hawaiian eruptions pour lava fountains and long rivers of pahoehoe that crust over into ropy sheets and tubes that carry molten rock for kilometres underground.',
    'Andesitic stratovolcanoes erupt explosively. Viscous magma traps dissolved gas until the pressure shatters it into ash, and pyroclastic flows of scalding debris race down the flanks faster than any vehicle.',
    'Volcanologists watch for unrest with seismometers, tiltmeters and satellite radar. A swarm of small earthquakes, a swelling summit and rising sulphur dioxide emissions together warn that magma is ascending.',
  ].join('\n\n'),
  /** Another user's: must never appear in user-a's results. */
  sourdough: [
    '# Sourdough',
    'A starter is flour and water colonised by wild yeast and lactobacilli. Fed daily at room temperature it doubles within hours, smells of yoghurt and vinegar, and leavens a dough without any commercial yeast.',
    'The baker mixes flour, water and levain, rests the dough for autolyse, then folds it every half hour during bulk fermentation before shaping a boule and proving it overnight in a banneton in the refrigerator.',
  ].join('\n\n'),
} as const;

/** A sentence that appears in one document only (the middle paragraph of `volcanoes`). */
export const VOLCANO_SENTENCE = 'Viscous magma traps dissolved gas until the pressure shatters it into ash';
