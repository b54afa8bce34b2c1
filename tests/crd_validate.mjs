// Validates custom resources against the CRD schemas compiled into the @kubernetes-models
// packages (installed by tests/test_deploy_manifests.py into a cache directory).
// argv[2]: that directory. stdin: a JSON array of resources. stdout: a JSON array with, per
// resource, null (valid) or the validator's message.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const PACKAGES = { "keda.sh": "keda", "monitoring.coreos.com": "prometheus-operator" };
const root = process.argv[2];
const resources = JSON.parse(readFileSync(0, "utf8"));
const verdicts = [];
for (const resource of resources) {
  const [group, version] = resource.apiVersion.split("/");
  const module = `${root}/node_modules/@kubernetes-models/${PACKAGES[group]}/${group}/${version}/${resource.kind}.js`;
  const models = await import(pathToFileURL(module).href);
  try {
    new models[resource.kind](resource).validate();
    verdicts.push(null);
  } catch (error) {
    verdicts.push(String(error.message));
  }
}
process.stdout.write(JSON.stringify(verdicts));
