// Scores an http-cache-tests results file. The headline share is the one cache-tests.fyi publishes:
// required tests that passed, of the required tests run. The strict share also fails a test when a
// test it depends on failed. Browser-only tests are left out: a shared cache does not run them. A
// required test with no result (it did not run, or crashed) counts as failed, never as absent.
//
//   node score.mjs <package dir> <results.json> [--min PERCENT] [--min-optimal COUNT] [--markdown] [--failures]
import { existsSync, readFileSync } from 'fs'
import { pathToFileURL } from 'url'
import path from 'path'

const [packageDir, resultsFile, ...flags] = process.argv.slice(2)
if (!packageDir || !resultsFile) {
  console.error('usage: node score.mjs <http-cache-tests dir> <results.json> [--min PERCENT] [--min-optimal COUNT] [--markdown] [--failures]')
  process.exit(2)
}
const minIndex = flags.indexOf('--min')
const min = minIndex >= 0 ? parseFloat(flags[minIndex + 1]) : null
const minOptimalIndex = flags.indexOf('--min-optimal')
const minOptimal = minOptimalIndex >= 0 ? parseInt(flags[minOptimalIndex + 1], 10) : null

const load = async file => (await import(pathToFileURL(path.resolve(packageDir, file)).href)).default
const suites = await load('tests/index.mjs')
// 0.4.5 keeps Surrogate-Control out of its index; later revisions drop the suite.
if (existsSync(path.resolve(packageDir, 'tests/surrogate-control.mjs'))) {
  suites.push(await load('tests/surrogate-control.mjs'))
}
const results = JSON.parse(readFileSync(resultsFile, 'utf8'))

const byId = new Map()
for (const suite of suites) for (const test of suite.tests) byId.set(test.id, test)

const isRequired = test => test.kind === undefined || test.kind === 'required'
const passed = id => {
  const test = byId.get(id)
  if (results[id] !== true) return false
  return (test.depends_on || []).every(passed)
}

const rows = []
// Tests of kind `optimal` (a cache that reuses more is better) are counted beside the share.
let optimalTotal = 0
let optimalGood = 0
const optimalFailures = []
let total = 0
let good = 0
let strict = 0
const failures = []
for (const suite of suites) {
  let suiteTotal = 0
  let suiteGood = 0
  for (const test of suite.tests) {
    if (test.browser_only === true) continue
    if (test.kind === 'optimal') {
      optimalTotal++
      if (results[test.id] === true) optimalGood++
      else optimalFailures.push(`${suite.id} ${test.id} (optimal): ${JSON.stringify(results[test.id])}`)
    }
    if (!isRequired(test)) continue
    suiteTotal++
    if (results[test.id] === true) suiteGood++
    if (passed(test.id)) strict++
    else failures.push(`${suite.id} ${test.id}: ${JSON.stringify(results[test.id])}`)
  }
  total += suiteTotal
  good += suiteGood
  rows.push([suite.id, suite.name, suiteGood, suiteTotal])
}
const percent = total ? (100 * good) / total : 0

if (flags.includes('--markdown')) {
  console.log('| suite | name | required passed | required tests |')
  console.log('|---|---|---|---|')
  for (const [id, name, g, t] of rows) if (t) console.log(`| \`${id}\` | ${name} | ${g} | ${t} |`)
  console.log(`| **all** | | **${good}** | **${total}** |`)
}
if (flags.includes('--failures')) for (const line of [...failures, ...optimalFailures]) console.log(line)
console.log(`required tests passed: ${good} of ${total} (${percent.toFixed(1)}%); with dependencies: ${strict} (${((100 * strict) / total).toFixed(1)}%)`)
console.log(`optimal tests passed: ${optimalGood} of ${optimalTotal}`)
if (min !== null && percent < min) {
  console.error(`conformance dropped below the floor: ${percent.toFixed(1)}% < ${min}%`)
  process.exit(1)
}
if (minOptimal !== null && optimalGood < minOptimal) {
  console.error(`optimal tests passed dropped below the floor: ${optimalGood} < ${minOptimal}`)
  process.exit(1)
}
