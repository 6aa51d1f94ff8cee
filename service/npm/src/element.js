// @progress-relay/client/element: the <job-progress> element. Importing this module defines it
// (once per page, whichever of the package's entries was imported first).
export { JobProgressElement, sharedRelay } from "./progress-relay.js";
