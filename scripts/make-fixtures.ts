// Generates the sample documents under test/fixtures/ that the parser, sniffing and
// end-to-end tests read. Each format carries its own distinct prose about lighthouses so a
// test can tell which fixture a chunk came from; the output is committed, and this script is
// kept so the fixtures can be regenerated (pdf-lib and docx stamp dates, so bytes may differ).
// Run: node --import tsx scripts/make-fixtures.ts
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';
import { PDFDocument, StandardFonts } from 'pdf-lib';
import { Document, HeadingLevel, Packer, Paragraph, TextRun } from 'docx';

const outDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures');

const PDF_PAGES = [
  [
    'The Eddystone Lighthouse',
    '',
    'The Eddystone rocks lie fourteen miles south of Plymouth, a reef of red gneiss that',
    'wrecked ships for centuries before anyone dared to build on it. Henry Winstanley raised',
    'the first tower there in 1698, an ornate wooden structure decorated with carvings and',
    'cranes. It stood for five winters until the Great Storm of 1703 swept it into the sea,',
    'taking Winstanley himself with it. John Rudyerd followed with a tower of timber and',
    'granite ballast, which burned down in 1755 when the lantern set fire to the roof.',
    'The keeper on duty, Henry Hall, was ninety-four years old and swallowed molten lead',
    'while fighting the blaze; he died days later and the lump was found in his stomach.',
    '',
    'John Smeaton then designed a tower of dovetailed granite blocks, shaped like the trunk',
    'of an oak tree so that it widened at the base to resist the waves. Smeaton tested',
    'hydraulic lime that would set under water, and his tower stood from 1759 until the rock',
    'beneath it began to crack. The upper part was dismantled and rebuilt on Plymouth Hoe,',
    'where visitors still climb Smeaton\'s Tower to look out over the sound.',
  ],
  [
    'The Douglass Tower and Automation',
    '',
    'James Douglass built the present Eddystone light on an adjacent ledge in 1882, using',
    'the stump of Smeaton\'s tower as a reminder of the older work. The new tower is twice as',
    'tall, so its beam reaches further across the English Channel, and its lower courses',
    'are solid granite to break the force of Atlantic swells. Keepers lived in rotation,',
    'three at a time, cooking on a coal range and tending the paraffin vapour burner.',
    '',
    'A helipad was added above the lantern in 1980, and the station was automated two',
    'years later, ending almost three centuries of human watch on the reef. Today the light',
    'is monitored remotely from Harwich, and its white flash every ten seconds is powered',
    'by solar panels and batteries. Fishermen from Cawsand still steer by it on moonless',
    'nights, and divers visit the wreckage of the earlier towers scattered on the seabed.',
  ],
];

const DOCX_HEADING = 'Fresnel Lenses and the Science of the Beam';
const DOCX_PARAGRAPHS = [
  'Augustin-Jean Fresnel presented his stepped lens to the French Lighthouse Commission in 1822. ' +
    'Instead of a single thick piece of glass, the lens was built from concentric rings of prisms, ' +
    'each bending light toward a common focus. The design weighed a fraction of a solid lens of the ' +
    'same aperture and wasted far less of the lamp\'s light, so a modest oil flame could be seen ' +
    'twenty miles out to sea. The first Fresnel lens was installed at the Cordouan lighthouse at the ' +
    'mouth of the Gironde estuary in 1823, and within a few decades the design spread across the world.',
  'Lenses were graded by order, from the enormous hyperradiant lenses taller than a man to the small ' +
    'sixth-order lenses used in harbour lights. Rotating assemblies floated on baths of mercury so that ' +
    'a clockwork mechanism, wound by the keeper every few hours, could turn several tonnes of brass and ' +
    'glass smoothly. Each station received a characteristic pattern of flashes, recorded in the light ' +
    'lists, so that a navigator counting the intervals with a pocket watch could tell Cordouan from ' +
    'its neighbours. Many of these brass and crystal lenses survive in museums, still casting rainbows.',
];

const MARKDOWN = `# Keepers of the Northern Lights

The Stevenson family of Edinburgh designed most of the lighthouses that ring the coast of
Scotland. Robert Stevenson began as an apprentice to Thomas Smith, married his daughter, and
went on to build the Bell Rock lighthouse on a reef in the North Sea that is covered by the tide
for most of the day. Workmen could only labour at low water, and they lived on a floating light
ship moored nearby while the courses of sandstone and granite rose above the waves.

## Muckle Flugga

At the northern tip of Shetland stands Muckle Flugga, built by Thomas and David Stevenson in
1854 during the Crimean War to guard ships sailing to the Baltic. The rock is so exposed that
storm waves broke over the temporary tower sixty metres above the sea. Robert Louis Stevenson,
son of Thomas, visited the station as a young engineer before he abandoned the family trade to
write *Treasure Island* and *Kidnapped*.

## Life on the rock

- Keepers served four weeks on the rock and two weeks ashore with their families.
- Supplies arrived by boat from Burrafirth whenever the weather allowed a landing.
- Every evening the log recorded the barometer, the wind and the ships that passed.

The last keepers left the Northern Lighthouse Board stations in 1998, when Fair Isle South was
automated. Their cottages are now holiday lets, museums and artist studios, and the old logbooks
sit in the National Records of Scotland, full of careful handwriting about gales and gannets.
`;

const TEXT = `Lighthouses of the Pacific Coast

The Point Reyes lighthouse sits three hundred steps below the headland on the Marin County coast,
placed low so its beam would shine beneath the thick summer fog that rolls in from the Pacific.
Keepers there complained in their journals of wind so strong it stripped the paint from the tower
and of fog that lasted for weeks, when the steam whistle had to be fired all night long.

Further north, the Tillamook Rock light off Oregon was nicknamed Terrible Tilly. Storm waves hurled
boulders through the lantern glass, and the keepers were delivered by breeches buoy swung from a
derrick because no boat could land on the sheer basalt. After the light was retired in 1957 the
rock became a columbarium where the ashes of the dead were stored inside the old keeper quarters.

At Cape Disappointment, on the mouth of the Columbia River, the lighthouse guards one of the most
dangerous river bars in the world. Hundreds of vessels have been lost on the shifting sands where
the river meets the ocean, and the Coast Guard still trains its surf rescue crews in the breaking
swells below the cliff. Visitors can walk from the tower to the interpretive centre named for the
explorers Lewis and Clark, who reached this shore in the wet November of 1805.
`;

const HTML = `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>The Pharos of Alexandria</title>
  <style>body { font-family: serif; }</style>
</head>
<body>
  <h1>The Pharos of Alexandria</h1>
  <p>The Pharos of Alexandria was built on a small island off the Egyptian coast during the reign of
  Ptolemy II, and was completed around 280 BC. Designed by Sostratus of Cnidus, it rose in three
  stages: a square base, an octagonal middle section and a cylindrical top where a fire burned at
  night. Ancient writers claimed that a great mirror of polished bronze reflected sunlight by day
  and could be seen by sailors far out on the Mediterranean.</p>
  <h2>Earthquakes and ruin</h2>
  <p>The tower survived for well over a thousand years, guiding grain ships into the harbour that fed
  Rome and Constantinople. A series of earthquakes in the tenth and fourteenth centuries damaged the
  upper stages, and the traveller <strong>Ibn Battuta</strong> found the entrance impossible to reach
  when he returned in 1349. In 1480 the Mamluk sultan Qaitbay used the fallen stones to build a
  fortress on the same site, which still stands at the end of the harbour mole.</p>
  <h2>Legacy</h2>
  <ul>
    <li>The word for lighthouse in French, Italian and Spanish descends from the name Pharos.</li>
    <li>Divers in the eastern harbour have recovered colossal statues and blocks of granite.</li>
    <li>Coins minted in Alexandria under Roman rule show the tower with its statue on top.</li>
  </ul>
  <script>console.log('this script must not appear in the markdown');</script>
</body>
</html>
`;

async function makePdf(): Promise<Uint8Array> {
  const doc = await PDFDocument.create();
  const font = await doc.embedFont(StandardFonts.Helvetica);
  const bold = await doc.embedFont(StandardFonts.HelveticaBold);
  for (const lines of PDF_PAGES) {
    const page = doc.addPage([595, 842]);
    let y = 780;
    lines.forEach((line, i) => {
      if (line !== '') {
        page.drawText(line, { x: 50, y, size: i === 0 ? 16 : 11, font: i === 0 ? bold : font });
      }
      y -= i === 0 ? 28 : 16;
    });
  }
  // Fixed dates keep regenerated fixtures byte-stable.
  const epoch = new Date('2024-01-01T00:00:00Z');
  doc.setCreationDate(epoch);
  doc.setModificationDate(epoch);
  doc.setTitle('The Eddystone Lighthouse');
  return doc.save();
}

async function makeDocx(): Promise<Buffer> {
  const doc = new Document({
    creator: 'docpipe fixtures',
    title: DOCX_HEADING,
    sections: [
      {
        children: [
          new Paragraph({ heading: HeadingLevel.HEADING_1, children: [new TextRun(DOCX_HEADING)] }),
          ...DOCX_PARAGRAPHS.map((text) => new Paragraph({ children: [new TextRun(text)] })),
        ],
      },
    ],
  });
  return Packer.toBuffer(doc);
}

/** A valid 1x1 RGBA PNG, built by hand so the fixture needs no image library. */
function makePng(): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (buf: Buffer): number => {
    let c = 0xffffffff;
    for (const byte of buf) c = crcTable[(c ^ byte) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(1, 0); // width
  ihdr.writeUInt32BE(1, 4); // height
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // colour type RGBA
  const pixels = Buffer.from([0, 0x1e, 0x90, 0xff, 0xff]); // filter byte + one pixel
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(pixels)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

async function main(): Promise<void> {
  await mkdir(outDir, { recursive: true });
  const files: Array<[string, Uint8Array | string]> = [
    ['sample.pdf', await makePdf()],
    ['sample.docx', await makeDocx()],
    ['sample.md', MARKDOWN],
    ['sample.txt', TEXT],
    ['sample.html', HTML],
    ['not-supported.png', makePng()],
  ];
  for (const [name, data] of files) {
    await writeFile(join(outDir, name), data);
    console.log(`wrote test/fixtures/${name}`);
  }
}

await main();
