export { JobProgressElement, sharedRelay } from "./index.js";
