//! `ai.onnx.ml` `TreeEnsembleRegressor` for tract-onnx, which ships only the classifier. It
//! parses the standard attributes into tract's own tree-ensemble data and runs tract's ensemble
//! evaluator (the one behind its classifier), whose per-target sums are the regressor's output.

use tract_hir::internal::*;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{AttributeProto, NodeProto};
use tract_onnx_opl::ml::tree_ensemble_classifier::{
    Aggregate, Cmp, TreeEnsemble, TreeEnsembleClassifier, TreeEnsembleData,
};

/// Adds the regressor to a tract ONNX framework.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert("TreeEnsembleRegressor", regressor);
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &NodeProto, name: &str) -> TractResult<Vec<usize>> {
    let a = attr(node, name).with_context(|| format!("{} lacks {name}", node.name))?;
    a.ints
        .iter()
        .map(|&i| usize::try_from(i).with_context(|| format!("{name}: negative {i}")))
        .collect()
}

fn regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets = attr(node, "n_targets").map_or(1, |a| a.i.max(1) as usize);
    let aggregate = match attr(node, "aggregate_function").map(|a| a.s.as_slice()) {
        None | Some(b"SUM") => Aggregate::Sum,
        Some(b"AVERAGE") => Aggregate::Avg,
        Some(b"MIN") => Aggregate::Min,
        Some(b"MAX") => Aggregate::Max,
        Some(other) => bail!("aggregate_function {:?}", String::from_utf8_lossy(other)),
    };
    if let Some(a) = attr(node, "post_transform")
        && a.s != b"NONE"
    {
        bail!(
            "post_transform {:?} is not supported",
            String::from_utf8_lossy(&a.s)
        );
    }
    let tree_ids = ints(node, "nodes_treeids")?;
    let node_ids = ints(node, "nodes_nodeids")?;
    let features = ints(node, "nodes_featureids")?;
    let true_ids = ints(node, "nodes_truenodeids")?;
    let false_ids = ints(node, "nodes_falsenodeids")?;
    let values = attr(node, "nodes_values")
        .map(|a| a.floats.clone())
        .unwrap_or_default();
    let modes: Vec<Option<Cmp>> = attr(node, "nodes_modes")
        .context("nodes_modes")?
        .strings
        .iter()
        .map(|m| match m.as_slice() {
            b"BRANCH_LEQ" => Ok(Some(Cmp::LessEqual)),
            b"BRANCH_LT" => Ok(Some(Cmp::Less)),
            b"BRANCH_GTE" => Ok(Some(Cmp::GreaterEqual)),
            b"BRANCH_GT" => Ok(Some(Cmp::Greater)),
            b"BRANCH_EQ" => Ok(Some(Cmp::Equal)),
            b"BRANCH_NEQ" => Ok(Some(Cmp::NotEqual)),
            b"LEAF" => Ok(None),
            other => bail!("node mode {:?}", String::from_utf8_lossy(other)),
        })
        .collect::<TractResult<_>>()?;
    let n = node_ids.len();
    ensure!(n > 0, "no nodes");
    ensure!(
        [
            tree_ids.len(),
            features.len(),
            true_ids.len(),
            false_ids.len(),
            values.len(),
            modes.len()
        ] == [n; 6],
        "node attributes disagree in length"
    );
    let leaf_tree = ints(node, "target_treeids")?;
    let leaf_node = ints(node, "target_nodeids")?;
    let leaf_target = ints(node, "target_ids")?;
    let leaf_weight = attr(node, "target_weights")
        .map(|a| a.floats.clone())
        .unwrap_or_default();
    ensure!(
        [leaf_node.len(), leaf_target.len(), leaf_weight.len()] == [leaf_tree.len(); 3],
        "target attributes disagree in length"
    );
    ensure!(
        leaf_target.iter().all(|&t| t < n_targets),
        "target id out of range"
    );

    // tract's layout: nodes sorted by (tree, node); per tree its first row; a leaf row holds
    // the range of its (target, weight) pairs.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (tree_ids[i], node_ids[i]));
    let mut leaf_order: Vec<usize> = (0..leaf_tree.len()).collect();
    leaf_order.sort_by_key(|&i| (leaf_tree[i], leaf_node[i]));
    let mut trees: Vec<u32> = Vec::new();
    let mut rows: Vec<u32> = Vec::new();
    let mut leaves: Vec<u32> = Vec::new();
    let mut current = None;
    let mut next_leaf = 0;
    for i in order {
        if current != Some(tree_ids[i]) {
            current = Some(tree_ids[i]);
            trees.push((rows.len() / 5) as u32);
        }
        let base = *trees.last().context("a tree")?;
        match modes[i] {
            Some(cmp) => rows.extend([
                features[i] as u32,
                true_ids[i] as u32 + base,
                false_ids[i] as u32 + base,
                values[i].to_bits(),
                cmp as u32,
            ]),
            None => {
                let start = (leaves.len() / 2) as u32;
                while next_leaf < leaf_order.len()
                    && leaf_tree[leaf_order[next_leaf]] == tree_ids[i]
                    && leaf_node[leaf_order[next_leaf]] == node_ids[i]
                {
                    let l = leaf_order[next_leaf];
                    leaves.extend([leaf_target[l] as u32, leaf_weight[l].to_bits()]);
                    next_leaf += 1;
                }
                rows.extend([start, (leaves.len() / 2) as u32, 0, 0, 0]);
            }
        }
    }
    let max_feature = features.iter().copied().max().unwrap_or(0);
    let data = TreeEnsembleData {
        trees: rctensor1(&trees),
        nodes: tensor1(&rows)
            .into_shape(&[rows.len() / 5, 5])?
            .into_arc_tensor(),
        leaves: tensor1(&leaves)
            .into_shape(&[leaves.len() / 2, 2])?
            .into_arc_tensor(),
    };
    let ensemble = TreeEnsemble::build(data, max_feature, n_targets, aggregate)?;
    Ok((
        expand(Regressor {
            ensemble,
            n_targets,
        }),
        vec![],
    ))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Regressor {
    ensemble: TreeEnsemble,
    n_targets: usize,
}

impl Expansion for Regressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.n_targets.to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(
            format!("{prefix}.ensemble"),
            TreeEnsembleClassifier {
                ensemble: self.ensemble.clone(),
            },
            inputs,
        )
    }
}
