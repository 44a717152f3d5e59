import { expect, it } from "vitest";
import { simulationPart } from "./run-schedules.js";

simulationPart(0, it, expect);
