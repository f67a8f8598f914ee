"""Built-in defense plugins: each class registers itself (`class Hedge(Defense, name="hedge")`), found through this
package's entry point exactly as a third party's are."""
